//! Fixture repositories, made with the git CLI into a directory of bare repositories.

use std::path::Path;
use std::process::Command;

/// Commits of the `simple` fixture, by role.
#[derive(Debug, Clone)]
pub struct Simple {
    /// First commit on `trunk` (also the base of `feature`).
    pub first: String,
    /// Head of `trunk` (the default branch).
    pub trunk_head: String,
    /// Head of `feature` (not on `trunk`).
    pub feature_head: String,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Fixture",
            "-c",
            "user.email=fixture@example.com",
            "-c",
            "init.defaultBranch=trunk",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Builds `root/simple.git`: default branch `trunk` (two commits) and `feature`
/// (one commit off the first), with a tree of odd names for the file tests.
pub fn simple(root: &Path) -> Simple {
    let work = root.join("simple-work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q"]);
    std::fs::write(
        work.join("README.md"),
        "# simple\n\nA fixture repository.\n",
    )
    .unwrap();
    std::fs::create_dir_all(work.join("src")).unwrap();
    std::fs::write(work.join("src/main.py"), "print('hello from simple')\n").unwrap();
    std::fs::write(work.join(".hidden"), "hidden\n").unwrap();
    std::fs::write(work.join("name with spaces.txt"), "spaces\n").unwrap();
    std::fs::write(work.join("ünïcødé.txt"), "unicode\n").unwrap();
    std::fs::write(work.join("binary.bin"), [0u8, 159, 146, 150, 255, 0, 1]).unwrap();
    std::os::unix::fs::symlink("README.md", work.join("link-to-readme")).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    let first = git(&work, &["rev-parse", "HEAD"]);
    std::fs::write(work.join("CHANGELOG"), "second\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "second"]);
    let trunk_head = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["checkout", "-q", "-b", "feature", &first]);
    std::fs::write(work.join("FEATURE"), "feature\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "feature"]);
    let feature_head = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["checkout", "-q", "trunk"]);
    git(
        root,
        &["clone", "-q", "--bare", "simple-work", "simple.git"],
    );
    std::fs::remove_dir_all(&work).unwrap();
    Simple {
        first,
        trunk_head,
        feature_head,
    }
}

/// Builds `root/<name>.git` with `files` files totalling about `bytes` bytes of
/// incompressible content in nested directories (for benchmarks).
pub fn generated(root: &Path, name: &str, files: usize, bytes: usize) {
    let work = root.join(format!("{name}-work"));
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q"]);
    let per_file = bytes / files.max(1);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..files {
        let dir = work.join(format!("d{:02}/e{:02}", i % 50, (i / 50) % 20));
        std::fs::create_dir_all(&dir).unwrap();
        let mut content = Vec::with_capacity(per_file);
        while content.len() < per_file {
            // xorshift: cheap, incompressible enough that git cannot shrink it away.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            content.extend_from_slice(&state.to_le_bytes());
        }
        content.truncate(per_file);
        std::fs::write(dir.join(format!("f{i:05}.dat")), content).unwrap();
    }
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "generated"]);
    git(
        root,
        &[
            "clone",
            "-q",
            "--bare",
            &format!("{name}-work"),
            &format!("{name}.git"),
        ],
    );
    std::fs::remove_dir_all(&work).unwrap();
}
