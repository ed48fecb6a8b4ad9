//! The `repobox` binary: parse settings, set up logging, serve.

use repobox::config::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::load();
    let config = cli.config;
    config.validate()?;
    let filter = EnvFilter::try_new(config.log_filter())?;
    match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Human => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => repobox::server::serve(config).await,
    }
}
