//! A private image registry for the image tests: Debian's `docker-registry` (the CNCF
//! distribution registry, 2.8) on a free loopback port, optionally behind htpasswd
//! basic auth, plus helpers to push images to it and a tiny image made from busybox.
//!
//! Plain HTTP throughout: the engine treats registries on 127.0.0.1 as insecure ones,
//! and distribution 2.8 enforces htpasswd auth without TLS. `scripts/setup-docker.sh`
//! installs `docker-registry` and `busybox-static`.
//!
//! Everything here is blocking (it runs the docker CLI): call it before a test's
//! requests, or from `tokio::task::spawn_blocking`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// Cost of the htpasswd entry's bcrypt hash: the lowest Go's bcrypt accepts (the
/// registry checks the password on every request).
const BCRYPT_COST: &str = "04";
/// Salt of the htpasswd entry: fixed (a test password needs no secrecy). 22 characters
/// of bcrypt's alphabet, the last with its unused bits clear.
const BCRYPT_SALT: &str = "repoboxtestsaltrepoboe";

/// A running registry, stopped (and its storage removed) when dropped.
pub(crate) struct Registry {
    /// Where it listens: `127.0.0.1:PORT` (also the prefix of its image references).
    pub host: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a registry on a free loopback port and waits (at most ~10 s) until it
/// answers `GET /v2/`. With `auth` (user, password) it accepts only those credentials
/// (basic auth, htpasswd with a bcrypt entry); the user must not contain `:`.
pub(crate) fn start(auth: Option<(&str, &str)>) -> Registry {
    let binary = "docker-registry";
    assert!(
        Command::new("sh")
            .args(["-c", &format!("command -v {binary}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success()),
        "no `{binary}` on PATH: run scripts/setup-docker.sh (Debian package docker-registry)"
    );
    let dir = super::scratch();
    let htpasswd = auth.map(|(user, password)| {
        assert!(!user.contains(':'), "an htpasswd user cannot contain ':'");
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, format!("{user}:{}\n", bcrypt(password))).unwrap();
        path
    });
    let config = dir.path().join("config.yml");
    let log = dir.path().join("registry.log");
    let id = dir.path().to_string_lossy().into_owned();
    // The port is free when asked, but someone may take it before the registry binds
    // it: try again (with another one) when it exits early.
    let want = if auth.is_some() { 401 } else { 200 };
    let mut failures = Vec::new();
    for _ in 0..3 {
        let host = format!("127.0.0.1:{}", free_port());
        std::fs::write(
            &config,
            config_yaml(&dir.path().join("data"), &host, &id, htpasswd.as_deref()),
        )
        .unwrap();
        let out = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting docker-registry");
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = v2_status(&host, &id) {
                break Some(status);
            }
            if let Ok(Some(exit)) = child.try_wait() {
                failures.push(format!("{host}: exited ({exit}): {}", log_text()));
                break None;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "registry at {host} did not answer within 10 s; its log:\n{}",
                    log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let Some(status) = status else { continue };
        if status != want {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "registry at {host} answered GET /v2/ with {status}, not {want}; its log:\n{}",
                log_text()
            );
        }
        kill_after_exit(child.id(), dir.path());
        return Registry {
            host,
            child,
            _dir: dir,
        };
    }
    panic!("docker-registry would not start:\n{}", failures.join("\n"));
}

impl Registry {
    /// Tags local image `local` as `<host>/<name>` (`name` may carry a tag, e.g.
    /// `private/tiny:v1`), pushes it (after `docker login` with `auth`, in a Docker
    /// config directory of its own: root's `~/.docker` is never touched), then removes
    /// that tag again so that a create has to pull it. Returns `<host>/<name>`.
    /// Panics with docker's output when a step fails.
    pub(crate) fn push(&self, local: &str, name: &str, auth: Option<(&str, &str)>) -> String {
        let reference = format!("{}/{name}", self.host);
        let config = tempfile::Builder::new()
            .prefix("repobox-docker-config-")
            .tempdir()
            .unwrap();
        docker(config.path(), &["tag", local, &reference], None);
        let pushed = (|| {
            if let Some((user, password)) = auth {
                docker_result(
                    config.path(),
                    &["login", "-u", user, "--password-stdin", &self.host],
                    Some(password),
                )?;
            }
            docker_result(config.path(), &["push", "-q", &reference], None)
        })();
        // `local` keeps the layers: this only untags.
        docker(config.path(), &["rmi", &reference], None);
        if let Err(error) = pushed {
            panic!("pushing {local} as {reference}: {error}");
        }
        reference
    }
}

/// Writes a Docker `config.json` holding credentials `user`/`password` for registry
/// `host` (`{"auths": {"<host>": {"auth": base64("user:password")}}}`) into `dir`
/// (created if missing) and returns its path.
pub(crate) fn auth_file(dir: &Path, host: &str, user: &str, password: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let config = serde_json::json!({ "auths": { host: { "auth": auth } } });
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    path
}

/// Makes local image `tag` (about 2 MB) unless it already exists: `docker import` of a
/// root holding only a static busybox, its applets `sh cat ls env echo mkdir test true
/// sleep tar` as symlinks in `/bin`, an empty `/tmp`, `/etc/passwd` and `/etc/group`
/// with root, and `PATH=/bin`. Nothing of repobox's is in it.
pub(crate) fn tiny_image(tag: &str) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _held = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let exists = Command::new("docker")
        .args(["image", "inspect", tag])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if exists {
        return;
    }
    let busybox = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|path| path.is_file())
        .expect("no busybox: run scripts/setup-docker.sh (Debian package busybox-static)");
    let elf = std::fs::read(busybox).unwrap();
    assert!(
        !dynamically_linked(&elf),
        "{} is dynamically linked: install busybox-static (scripts/setup-docker.sh)",
        busybox.display()
    );
    let work = tempfile::Builder::new()
        .prefix("repobox-tiny-")
        .tempdir()
        .unwrap();
    let root = work.path().join("root");
    for dir in ["bin", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(root.join("bin/busybox"), &elf).unwrap();
    std::fs::set_permissions(
        root.join("bin/busybox"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for applet in [
        "sh", "cat", "ls", "env", "echo", "mkdir", "test", "true", "sleep", "tar",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    let tar = work.path().join("tiny.tar");
    let out = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .expect("tar");
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("docker")
        .args(["import", "--change", "ENV PATH=/bin"])
        .arg(&tar)
        .arg(tag)
        .output()
        .expect("docker import");
    assert!(
        out.status.success(),
        "docker import {tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An htpasswd bcrypt hash of `password`, by the C library's `crypt` (libxcrypt does
/// bcrypt) through Perl, which Debian always has (perl-base is essential): no Rust
/// dependency, and unlike Python's `crypt` module (gone in 3.13) it stays.
fn bcrypt(password: &str) -> String {
    let setting = format!("$2b${BCRYPT_COST}${BCRYPT_SALT}");
    let out = Command::new("perl")
        .args(["-e", "print crypt($ARGV[0], $ARGV[1])", password, &setting])
        .output()
        .expect("perl (for a bcrypt hash)");
    let hash = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && hash.starts_with(&setting) && hash.len() == 60,
        "this C library's crypt() does no bcrypt (got {hash:?}: {}); \
         use the bcrypt crate instead",
        String::from_utf8_lossy(&out.stderr)
    );
    hash
}

/// Header every response of a test registry carries, its value the registry's own
/// (its directory): tells our registry from another that took the port meanwhile.
const ID_HEADER: &str = "X-Repobox-Registry";

/// The registry's configuration (YAML; paths as JSON strings, which YAML reads alike).
fn config_yaml(data: &Path, host: &str, id: &str, htpasswd: Option<&Path>) -> String {
    let quote = |path: &Path| serde_json::to_string(&path.to_string_lossy()).unwrap();
    let mut yaml = format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
         http:\n  addr: {host}\n  secret: repobox-test-secret\n  \
         headers:\n    {ID_HEADER}: [{id}]\n",
        data = quote(data),
        id = serde_json::to_string(id).unwrap(),
    );
    if let Some(path) = htpasswd {
        yaml.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: repobox-test\n    path: {}\n",
            quote(path)
        ));
    }
    yaml
}

/// A loopback port nobody listened on a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The status of `GET /v2/` at `host` if the registry answering is the one whose
/// [`ID_HEADER`] is `id`; `None` while nothing (or another) answers.
fn v2_status(host: &str, id: &str) -> Option<u16> {
    let mut stream =
        TcpStream::connect_timeout(&host.parse().ok()?, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(format!("GET /v2/ HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .ok()?;
    // HTTP/1.0: the registry closes the connection after its (small) answer.
    let mut response = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response);
    let (head, _body) = response.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    // "HTTP/1.x NNN Reason"
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    lines
        .filter_map(|line| line.split_once(':'))
        .any(|(name, value)| name.trim().eq_ignore_ascii_case(ID_HEADER) && value.trim() == id)
        .then_some(status)
}

/// Whether an ELF binary asks for a dynamic loader (has a PT_INTERP program header).
/// Only 64-bit little-endian ELF is looked into; anything else counts as static.
fn dynamically_linked(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return false;
    }
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (entsize, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let at = phoff + i * entsize;
        elf.get(at..at + 4)
            .is_some_and(|p_type| u32::from_le_bytes(p_type.try_into().unwrap()) == PT_INTERP)
    })
}

/// Kills registry `pid` (if it is still the one serving from `dir`) and removes `dir`
/// once this test process is gone, however it ends (a dropped [`Registry`] does both
/// itself; this is for a process killed before that).
fn kill_after_exit(pid: u32, dir: &Path) {
    let dir = dir.to_string_lossy();
    let keep = std::env::var_os("KEEP_SCRATCH").is_some();
    let script = format!(
        "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         if tr '\\0' ' ' </proc/{pid}/cmdline 2>/dev/null | grep -qF -- \"$1\"; then kill -9 {pid}; fi; \
         {remove}",
        me = std::process::id(),
        remove = if keep { "" } else { "rm -rf -- \"$1\"" },
    );
    let _ = Command::new("sh")
        .args(["-c", &script, "registry-watchdog", &dir])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// Runs docker with `DOCKER_CONFIG=config`; its stdout, or panics with its stderr.
fn docker(config: &Path, args: &[&str], stdin: Option<&str>) -> String {
    docker_result(config, args, stdin).unwrap_or_else(|error| panic!("{error}"))
}

/// Runs docker with `DOCKER_CONFIG=config` (and `stdin` fed in); its stdout, or what
/// it said on failure.
fn docker_result(config: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut child = Command::new("docker")
        .args(args)
        .env("DOCKER_CONFIG", config)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().expect("docker");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "docker {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}
