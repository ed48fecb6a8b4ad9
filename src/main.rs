//! The `repobox` binary: parse the command line; serve (set up logging, run the
//! server) or run a client command and exit with its status.

use std::process::ExitCode;

use repobox::cli::{Cli, Command};
use repobox::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::load();
    match cli.command {
        None => serve(Config::defaults()),
        Some(Command::Serve(config)) => serve(*config),
        Some(Command::AgentImage { tag }) => agent_image(tag),
        Some(command) => {
            // One thread is plenty for a client; the runtime is shut down without
            // waiting for blocking reads still in progress (stdin).
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("repobox: cannot start: {err}");
                    return ExitCode::FAILURE;
                }
            };
            let code = runtime.block_on(repobox::cli::run(cli.client, command));
            runtime.shutdown_background();
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}

/// `repobox agent-image`: the agent image's build context on stdout, or its tag.
fn agent_image(tag: bool) -> ExitCode {
    use std::io::Write;
    let written = if tag {
        writeln!(
            std::io::stdout(),
            "{}",
            repobox::kubernetes::default_agent_image()
        )
    } else {
        repobox::kubernetes::agent_image_context()
            .and_then(|context| std::io::stdout().write_all(&context))
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("repobox: {err}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> ExitCode {
    match run_server(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("Error: {err:?}");
            ExitCode::FAILURE
        }
    }
}

fn run_server(config: Config) -> anyhow::Result<()> {
    config.validate()?;
    let filter = EnvFilter::try_new(config.log_filter())?;
    match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Human => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(repobox::server::serve(config))
}
