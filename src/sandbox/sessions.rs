//! Sessions by sandbox id: the service's verbs for creating, listing, ending and
//! running commands in sessions. A session's commands take turns under its lock, here,
//! for every caller.

use std::collections::BTreeMap;

use super::Sandboxes;
use crate::error::{Error, Result};
use crate::exec::{self, Command, ExecResult};
use crate::id::SandboxId;
use crate::session::{self, SessionInfo};

impl Sandboxes {
    /// Creates a session in sandbox `id`, starting in `working_dir` with `env`.
    pub async fn create_session(
        &self,
        id: &SandboxId,
        working_dir: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<SessionInfo> {
        self.get(id)?;
        self.policy()
            .check_environment(env.keys().map(String::as_str))?;
        let agent = self.agent(id).await?;
        let lock = self.session_lock(id, "");
        let _creating = lock.lock().await;
        session::create(&agent, working_dir, env).await
    }

    /// The sessions of sandbox `id`.
    pub async fn sessions(&self, id: &SandboxId) -> Result<Vec<SessionInfo>> {
        self.get(id)?;
        let agent = self.agent(id).await?;
        session::list(&agent).await
    }

    /// Ends session `session_id` of sandbox `id`, after the command in flight if any.
    pub async fn delete_session(&self, id: &SandboxId, session_id: &str) -> Result<()> {
        self.get(id)?;
        let agent = self.agent(id).await?;
        let lock = self.session_lock(id, session_id);
        let _turn = lock.lock().await;
        session::delete(&agent, session_id).await?;
        self.forget_session(id, session_id);
        Ok(())
    }

    /// Runs `command` in session `session_id` of sandbox `id`, in its turn, from the
    /// session's saved state (verified before it is sourced); `working_dir` as the
    /// client gave it (`None`: the session's own). The result names the command as
    /// given, not its wrapper.
    pub async fn session_execute(
        &self,
        id: &SandboxId,
        session_id: &str,
        command: Command,
        working_dir: Option<&str>,
        output_cap: usize,
    ) -> Result<ExecResult> {
        let sandbox = self.get(id)?;
        if !session::valid_id(session_id) {
            return Err(Error::SessionNotFound(format!(
                "no session {session_id:?} in this sandbox"
            )));
        }
        self.allow(
            &command.command,
            command.env.iter().map(|(name, _)| name.as_str()),
        )?;
        let agent = self.agent(id).await?;
        let lock = self.session_lock(id, session_id);
        let _turn = lock.lock().await;
        let restore = session::restore(&agent, session_id, self.policy()).await?;
        let as_given = command.command.clone();
        let mut wrapped = session::command(session_id, command, working_dir, restore);
        wrapped.env = sandbox.command_env(wrapped.env);
        let mut result = exec::run(&agent, wrapped, output_cap).await?;
        result.command = as_given;
        Ok(result)
    }
}
