//! Fixture repositories, made with the git CLI into a directory of bare repositories.

use std::path::Path;
use std::process::Command;

/// Commits of the `simple` fixture, by role.
#[derive(Debug, Clone)]
pub(crate) struct Simple {
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
pub(crate) fn simple(root: &Path) -> Simple {
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
pub(crate) fn generated(root: &Path, name: &str, files: usize, bytes: usize) {
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

/// Builds `root/<name>.git` from `files` (path, content; parents made as needed) in one
/// commit on `trunk`; returns that commit.
pub(crate) fn bare_repo(root: &Path, name: &str, files: &[(&str, String)]) -> String {
    let work = root.join(format!("{name}-work"));
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q"]);
    for (path, content) in files {
        let path = work.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", name]);
    let head = git(&work, &["rev-parse", "HEAD"]);
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
    head
}

/// Builds `root/<name>.git` whose `Dockerfile` (at the root) builds on `base_image`,
/// writes `/marker` (`built-by-repobox`) and sets `FROM_DOCKERFILE=yes`; returns its
/// head commit.
pub(crate) fn dockerfile_repo(root: &Path, name: &str, base_image: &str) -> String {
    bare_repo(
        root,
        name,
        &[
            (
                "Dockerfile",
                format!(
                    "FROM {base_image}\nRUN echo built-by-repobox > /marker\nENV FROM_DOCKERFILE=yes\n"
                ),
            ),
            (
                "README.md",
                "# dockerfile fixture\n\nBuilt from its Dockerfile.\n".to_owned(),
            ),
        ],
    )
}

/// Builds `root/<name>.git` with a `.devcontainer/devcontainer.json` (JSONC: `//` and
/// `/* */` comments, `//` inside a string, trailing commas) that builds
/// `.devcontainer/Dockerfile` (on `base_image`; build arg `GREETING=hi` written to
/// `/greeting`), sets `containerEnv` `FROM_DEVCONTAINER=yes` and has a
/// `postCreateCommand` writing `/workspace/.post-create`; returns its head commit.
pub(crate) fn devcontainer_repo(root: &Path, name: &str, base_image: &str) -> String {
    let json = r#"// The e2e tests' devcontainer: JSONC on purpose (comments, trailing commas).
{
    /* "name" holds a "//" that is no comment */
    "name": "repobox fixture // not a comment",
    "build": {
        "dockerfile": "Dockerfile", // relative to .devcontainer/
        "args": {
            "GREETING": "hi",
        },
    },
    "containerEnv": { "FROM_DEVCONTAINER": "yes" },
    /* runs once, in the sandbox, after it is made */
    "postCreateCommand": "echo post-create > /workspace/.post-create",
}
"#;
    bare_repo(
        root,
        name,
        &[
            (".devcontainer/devcontainer.json", json.to_owned()),
            (
                ".devcontainer/Dockerfile",
                format!("FROM {base_image}\nARG GREETING\nRUN echo \"$GREETING\" > /greeting\n"),
            ),
            (
                "README.md",
                "# devcontainer fixture\n\nBuilt from .devcontainer/.\n".to_owned(),
            ),
        ],
    )
}

/// Builds `root/<name>.git` with a `.devcontainer/devcontainer.json` (JSONC, like
/// [`devcontainer_repo`]'s) naming `"image": base_image` and a devcontainer feature
/// (`ghcr.io/devcontainers/features/node:1`), plus the same `containerEnv` and
/// `postCreateCommand`; no Dockerfile. Returns its head commit.
pub(crate) fn devcontainer_with_features(root: &Path, name: &str, base_image: &str) -> String {
    let json = format!(
        r#"// The e2e tests' devcontainer with a feature: JSONC on purpose.
{{
    "name": "repobox fixture with features",
    "image": {image}, /* no build: the image as it is */
    "features": {{
        "ghcr.io/devcontainers/features/node:1": {{}},
    }},
    "containerEnv": {{ "FROM_DEVCONTAINER": "yes" }},
    "postCreateCommand": "echo post-create > /workspace/.post-create",
}}
"#,
        image = serde_json::to_string(base_image).unwrap()
    );
    bare_repo(
        root,
        name,
        &[
            (".devcontainer/devcontainer.json", json),
            (
                "README.md",
                "# devcontainer fixture with features\n".to_owned(),
            ),
        ],
    )
}

/// Builds `root/<name>.git`, a git bomb: one 256 KiB blob, a tree of `per_tree`
/// entries of it, and a root tree of `trees` entries of that tree, in one commit on
/// `trunk`. The repository is a few hundred KiB; its checkout is
/// `trees × per_tree × 256 KiB`.
pub(crate) fn git_bomb(root: &Path, name: &str, per_tree: usize, trees: usize) -> String {
    use std::io::Write;
    let bare = root.join(format!("{name}.git"));
    git(root, &["init", "-q", "--bare", &format!("{name}.git")]);
    let run_with_input = |args: &[&str], input: &[u8]| -> String {
        let mut child = Command::new("git")
            .args(args)
            .current_dir(&bare)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    // Not compressible to nothing, so the blob is a real 256 KiB.
    let blob: Vec<u8> = (0..256 * 1024u32)
        .map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let blob = run_with_input(&["hash-object", "-w", "--stdin"], &blob);
    let leaves: String = (0..per_tree)
        .map(|n| format!("100644 blob {blob}\tf{n}\n"))
        .collect();
    let tree = run_with_input(&["mktree"], leaves.as_bytes());
    let dirs: String = (0..trees)
        .map(|n| format!("040000 tree {tree}\td{n}\n"))
        .collect();
    let top = run_with_input(&["mktree"], dirs.as_bytes());
    let commit = git(&bare, &["commit-tree", &top, "-m", "bomb"]);
    git(&bare, &["update-ref", "refs/heads/trunk", &commit]);
    git(&bare, &["symbolic-ref", "HEAD", "refs/heads/trunk"]);
    commit
}
