//! Builds the sandbox agent (`crates/agent`) as a static x86-64 Linux binary and hands
//! its path to the server crate, which embeds it (`agent::AGENT_BINARY`): every way of
//! building or running repobox (`cargo run`, `cargo test`, the release binary in a
//! container) then carries the agent it speaks to.
//!
//! The agent is built by a nested cargo in a target directory of its own
//! (`target/agent`), with `+crt-static` (glibc's static linking: no dependency on the
//! image's libc) and an explicit `--target`, so the flag never reaches the server's own
//! build or its proc macros. It is always built in release mode: it is copied into
//! every sandbox, so small matters.

use std::path::PathBuf;
use std::process::Command;

const AGENT_TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    for watched in [
        "crates/agent/src",
        "crates/agent/Cargo.toml",
        "crates/protocol/src",
        "crates/protocol/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={watched}");
    }
    println!("cargo:rerun-if-env-changed=REPOBOX_AGENT_BINARY");

    // A prebuilt agent may be named instead (e.g. by a packager).
    if let Some(prebuilt) = std::env::var_os("REPOBOX_AGENT_BINARY") {
        println!(
            "cargo:rustc-env=REPOBOX_AGENT_BINARY={}",
            PathBuf::from(prebuilt).display()
        );
        println!(
            "cargo:rustc-env=REPOBOX_AGENT_VERSION={}",
            agent_version(&manifest_dir)
        );
        return;
    }

    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("target"))
        .join("agent");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&manifest_dir)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "repobox-agent",
            "--target",
            AGENT_TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // What the outer cargo set for this build must not leak into the agent's.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_PRIMARY_PACKAGE")
        .env_remove("CARGO_MAKEFLAGS")
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS");
    let status = command
        .status()
        .expect("running cargo to build the sandbox agent");
    assert!(
        status.success(),
        "building the sandbox agent (crates/agent) failed"
    );
    let binary = target_dir
        .join(AGENT_TARGET)
        .join("release")
        .join("repobox-agent");
    assert!(
        binary.is_file(),
        "the agent build left no {}",
        binary.display()
    );
    println!("cargo:rustc-env=REPOBOX_AGENT_BINARY={}", binary.display());
    println!(
        "cargo:rustc-env=REPOBOX_AGENT_VERSION={}",
        agent_version(&manifest_dir)
    );
}

/// The agent crate's version, from its manifest.
fn agent_version(manifest_dir: &std::path::Path) -> String {
    let manifest = std::fs::read_to_string(manifest_dir.join("crates/agent/Cargo.toml"))
        .expect("reading crates/agent/Cargo.toml");
    manifest
        .lines()
        .find_map(|line| {
            let value = line
                .trim()
                .strip_prefix("version")?
                .trim()
                .strip_prefix('=')?;
            Some(value.trim().trim_matches('"').to_owned())
        })
        .expect("crates/agent/Cargo.toml has a version")
}
