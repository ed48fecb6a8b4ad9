//! Commands by sandbox id: the service's verbs for running a command, whole or
//! streamed, or as a background process. The command policy is checked and the sandbox's own environment put
//! under the command's here, for every caller (the API, jobs).

use tokio::sync::mpsc;

use super::Sandboxes;
use crate::agent::{ProcessInfo, ProcessSpec};
use crate::error::Result;
use crate::exec::{self, Command, Event, ExecResult};
use crate::id::SandboxId;

impl Sandboxes {
    /// The sandbox's view of `command`: refused by the command policy, or with the
    /// sandbox's environment under its own.
    fn prepare(&self, id: &SandboxId, mut command: Command) -> Result<Command> {
        let sandbox = self.get(id)?;
        self.allow(
            &command.command,
            command.env.iter().map(|(name, _)| name.as_str()),
        )?;
        command.env = sandbox.command_env(command.env);
        Ok(command)
    }

    /// Runs `command` in sandbox `id` to its end; each stream's output is kept up to
    /// `output_cap` bytes.
    pub async fn execute(
        &self,
        id: &SandboxId,
        command: Command,
        output_cap: usize,
    ) -> Result<ExecResult> {
        let command = self.prepare(id, command)?;
        let agent = self.agent(id).await?;
        exec::run(&agent, command, output_cap).await
    }

    /// Starts `command` in sandbox `id`; its output and end come as events. Dropping
    /// the receiver kills the command.
    pub async fn execute_streamed(
        &self,
        id: &SandboxId,
        command: Command,
    ) -> Result<mpsc::Receiver<Event>> {
        let command = self.prepare(id, command)?;
        let agent = self.agent(id).await?;
        exec::stream(&agent, command).await
    }

    /// Starts a background process in sandbox `id` as `spec` says (the policy
    /// checked, the sandbox's environment under the process's own).
    pub async fn start_process(
        &self,
        id: &SandboxId,
        mut spec: ProcessSpec,
    ) -> Result<ProcessInfo> {
        let sandbox = self.get(id)?;
        self.allow(
            &spec.command,
            spec.env.iter().map(|(name, _)| name.as_str()),
        )?;
        spec.env = sandbox.command_env(spec.env);
        let agent = self.agent(id).await?;
        agent.start_process(spec).await
    }
}
