//! The conformance suite: the same cases against every backend. Each case is one
//! function of [`cases`] taking the backend's kind; [`conformance!`] makes a test of
//! it per backend, so that `cargo test --test conformance -- local::` runs the local
//! backend's (seconds) and `-- docker::` Docker's. The Kubernetes backend's (`--
//! kube::`) need the test cluster (`scripts/kubernetes.sh`) and the agent's image:
//! they are ignored by a plain `cargo test`; `make kube-test` (part of `make
//! test`) brings both up, runs them, and takes the cluster down.
//!
//! A backend passes when every route a client uses behaves the same on it; what it
//! cannot serve it must say (`/info.backend.unsupported`) and refuse with 501
//! (`not_supported`), never half-do.
//!
//! The support code is the end-to-end suite's (`tests/e2e/support`): its git server
//! and fixtures, `spawn_app` and `test_config`.

#[allow(dead_code, unused_imports)]
#[path = "../e2e/support/mod.rs"]
mod support;

mod cases;
mod harness;
mod nodes;

pub use repobox::config::BackendKind as Kind;

/// A test per backend for each case named.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod docker {
            $(
                #[tokio::test]
                async fn $case() {
                    crate::cases::$case(crate::Kind::Docker).await
                }
            )*
        }
        mod local {
            $(
                #[tokio::test]
                async fn $case() {
                    crate::cases::$case(crate::Kind::Local).await
                }
            )*
        }
        mod kube {
            $(
                #[tokio::test]
                #[ignore = "needs the test cluster and the agent's image: make kube-test"]
                async fn $case() {
                    crate::cases::$case(crate::Kind::Kubernetes).await
                }
            )*
        }
    };
}

conformance!(
    creates_from_a_repository,
    executes_whole_and_streamed,
    runs_processes,
    keeps_session_state,
    reads_writes_lists_and_tars_files,
    reports_and_resets_git_state,
    destroys,
    expires,
    reconciles_after_a_restart,
    answers_for_what_it_cannot_do,
    contains_its_sandboxes,
    serves_from_its_warm_pool,
    runs_a_job,
    opens_a_terminal,
    reaches_only_its_allow_list,
    forwards_a_port,
);
