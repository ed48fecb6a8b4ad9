//! Stand-in "internet hosts" for the egress tests: each [`TestHost`] is a network
//! namespace of its own, joined to the root namespace by a veth pair, running
//! `scripts/egress_test_host.py` (HTTP on 80, HTTPS on 443 with a certificate of a CA
//! made for it alone). There is no internet here, and a test must never send traffic
//! anywhere but to addresses it made itself: these hosts are those addresses.
//!
//! Addresses. A host holds slot `n` (0..64) and with it two /30s on its veth:
//! public `198.51.100.(4n+2)` (TEST-NET-2: routable-looking, not private), root side
//! `.(4n+1)`; private `10.250.n.2`, root side `10.250.n.1`. Nothing else is routed, and
//! no name resolves to them: a client names the host with `--resolve`, `--add-host` or
//! the like.
//!
//! Slots are shared by every test process on the machine (two worktrees may run their
//! e2e tests at once, and the same address on two veths would break both): a slot is
//! held by binding an abstract Unix socket named after it, which the kernel releases
//! when the process ends however it ends. Whoever takes a slot first removes what a
//! dead holder left of it (namespace, veth, server).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Slots, so hosts at once: 64 /30s fill 198.51.100.0/24.
const SLOTS: usize = 64;
/// Bound on a host's start (namespace, certificates, server listening).
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The server, run inside the namespace.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/egress_test_host.py");

/// A host in a network namespace of its own, serving HTTP and HTTPS; removed when
/// dropped, also when the test fails.
pub(crate) struct TestHost {
    server: Child,
    slot: usize,
    ca: PathBuf,
    log: PathBuf,
    // Dropped in this order, after the server is killed: the namespace, then the slot
    // (a namespace of a released slot could be taken for a dead holder's), then the files.
    netns: Netns,
    _slot: UnixListener,
    _dir: tempfile::TempDir,
}

impl TestHost {
    /// Starts a host in a network namespace of its own, reachable from the root
    /// namespace at [`Self::public`] (in TEST-NET-2, 198.51.100.0/24, which is not
    /// private) and at [`Self::private`] (10.250.x.y), serving HTTP on port 80 and HTTPS
    /// on 443 (a certificate of a fresh CA, see [`Self::ca_pem`], for `names` and both
    /// addresses). `GET /hello` answers `hello from <names[0]>`; `/simple/` is a PEP 503
    /// index of one project, `tinypkg` (one wheel). Waits until both ports accept
    /// connections at both addresses; panics if they do not within 10 s. Needs root.
    pub(crate) fn start(names: &[&str]) -> TestHost {
        let started = Instant::now();
        let (slot, slot_guard) = claim_slot();
        remove_leftovers(slot);

        let pid = std::process::id();
        // Interface names hold 15 bytes: "th63p4194304" is 12.
        let netns = Netns {
            name: format!("repobox-th{slot}-{pid}"),
            veth: format!("th{slot}p{pid}"),
        };
        let (public, private) = (public_of(slot), private_of(slot));
        let (outer_public, outer_private) = (outer_public_of(slot), outer_private_of(slot));
        ip(&["netns", "add", &netns.name]);
        ip(&[
            "link",
            "add",
            &netns.veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &netns.name,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{outer_public}/30"),
            "dev",
            &netns.veth,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{outer_private}/30"),
            "dev",
            &netns.veth,
        ]);
        ip(&["link", "set", &netns.veth, "up"]);
        let inside = ["-n", netns.name.as_str()];
        ip(&[
            &inside[..],
            &["addr", "add", &format!("{public}/30"), "dev", "eth0"],
        ]
        .concat());
        ip(&[
            &inside[..],
            &["addr", "add", &format!("{private}/30"), "dev", "eth0"],
        ]
        .concat());
        ip(&[&inside[..], &["link", "set", "eth0", "up"]].concat());
        ip(&[&inside[..], &["link", "set", "lo", "up"]].concat());

        let dir = tempfile::Builder::new()
            .prefix("repobox-test-host-")
            .tempdir()
            .expect("a directory for the test host");
        let name = names
            .first()
            .map_or_else(|| public.to_string(), |name| (*name).to_owned());
        let (ca, cert, key) = certificates(dir.path(), &name, names, &[public, private]);
        let log = dir.path().join("requests.log");
        std::fs::write(&log, "").expect("the request log");
        let stderr = dir.path().join("server.err");
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns.name,
                "python3",
                SCRIPT,
                "--name",
                &name,
            ])
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("the server's stderr file"))
            .spawn()
            .expect("start the test host's server (ip netns exec ... python3)");
        let mut host = TestHost {
            server,
            slot,
            ca,
            log,
            netns,
            _slot: slot_guard,
            _dir: dir,
        };
        host.wait_listening(started, &stderr);
        host
    }

    /// Waits until ports 80 and 443 accept connections at both addresses.
    fn wait_listening(&mut self, started: Instant, stderr: &Path) {
        let deadline = started + START_TIMEOUT;
        for address in [self.public(), self.private()] {
            for port in [80, 443] {
                let target = SocketAddr::new(IpAddr::V4(address), port);
                loop {
                    if TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok() {
                        break;
                    }
                    let exited = self.server.try_wait().ok().flatten();
                    if exited.is_some() || Instant::now() >= deadline {
                        let why = match exited {
                            Some(status) => format!("its server exited ({status})"),
                            None => format!("nothing listened within {START_TIMEOUT:?}"),
                        };
                        panic!(
                            "test host {} does not accept connections at {target}: {why}; \
                             server stderr:\n{}",
                            self.netns.name,
                            std::fs::read_to_string(stderr).unwrap_or_default()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// The host's public address, 198.51.100.(4n+2).
    pub(crate) fn public(&self) -> Ipv4Addr {
        public_of(self.slot)
    }

    /// The host's private address, 10.250.n.2.
    pub(crate) fn private(&self) -> Ipv4Addr {
        private_of(self.slot)
    }

    /// The CA certificate the host's certificate is signed by, PEM.
    pub(crate) fn ca_pem(&self) -> String {
        std::fs::read_to_string(&self.ca).expect("the test host's CA certificate")
    }

    /// The CA certificate's file (for `curl --cacert`, `pip --cert`), removed with the host.
    pub(crate) fn ca_path(&self) -> &Path {
        &self.ca
    }

    /// One line per request received so far, in order: `METHOD path host-header`
    /// (`-` for no Host header), e.g. `GET /hello 198.51.100.2`. Connections that sent
    /// no request (the start's readiness probes) are not listed.
    pub(crate) fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// A network namespace and the root side of its veth, removed when dropped.
struct Netns {
    name: String,
    veth: String,
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove_netns(&self.name, Some(&self.veth));
    }
}

/// Takes the first free slot from a per-process starting point (so a slot just given
/// back is not the next one taken).
fn claim_slot() -> (usize, UnixListener) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let first = NEXT.fetch_add(1, Ordering::Relaxed);
    for i in 0..SLOTS {
        let slot = (first + i) % SLOTS;
        let name = format!("repobox-test-host-slot-{slot}");
        let address = UnixSocketAddr::from_abstract_name(name.as_bytes()).expect("a socket name");
        if let Ok(listener) = UnixListener::bind_addr(&address) {
            return (slot, listener);
        }
    }
    panic!("all {SLOTS} test host slots are taken (by this and other test processes)");
}

/// Removes what an earlier holder of `slot` (a process that died) left behind.
fn remove_leftovers(slot: usize) {
    let prefix = format!("repobox-th{slot}-");
    let namespaces = output("ip", &["netns", "list"]);
    for line in namespaces.lines() {
        if let Some(name) = line.split_whitespace().next()
            && name.starts_with(&prefix)
        {
            remove_netns(name, None);
        }
    }
    // A veth whose namespace is gone but whose peer lives on (a server still in it).
    let prefix = format!("th{slot}p");
    let links = output("ip", &["-o", "link", "show"]);
    for line in links.lines() {
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if name.starts_with(&prefix) {
            let _ = quiet("ip", &["link", "del", name]);
        }
    }
}

/// Deletes the veth first (at once: a namespace's devices go asynchronously, and the
/// slot's addresses must be free when this returns), then whatever runs in the
/// namespace, then the namespace. Never panics.
fn remove_netns(name: &str, veth: Option<&str>) {
    if let Some(veth) = veth {
        let _ = quiet("ip", &["link", "del", veth]);
    }
    for pid in output("ip", &["netns", "pids", name]).split_whitespace() {
        let _ = quiet("kill", &["-KILL", pid]);
    }
    let _ = quiet("ip", &["netns", "delete", name]);
}

fn public_of(slot: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, u8::try_from(4 * slot + 2).unwrap())
}

fn outer_public_of(slot: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, u8::try_from(4 * slot + 1).unwrap())
}

fn private_of(slot: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 250, u8::try_from(slot).unwrap(), 2)
}

fn outer_private_of(slot: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 250, u8::try_from(slot).unwrap(), 1)
}

/// Makes a CA and a server certificate it signs, for `names` and `addresses`, with the
/// `openssl` CLI: ECDSA P-256 keys (quick to make), the extensions strict verifiers
/// (Python 3.13, rustls) ask for. Returns the CA certificate, server certificate and
/// server key files.
fn certificates(
    dir: &Path,
    common_name: &str,
    names: &[&str],
    addresses: &[Ipv4Addr],
) -> (PathBuf, PathBuf, PathBuf) {
    let mut alt_names: Vec<String> = names
        .iter()
        .map(|name| match name.parse::<IpAddr>() {
            Ok(ip) => format!("IP:{ip}"),
            Err(_) => format!("DNS:{name}"),
        })
        .collect();
    alt_names.extend(addresses.iter().map(|ip| format!("IP:{ip}")));
    // A config of our own: the machine's openssl.cnf adds extensions of its choosing.
    let config = dir.join("openssl.cnf");
    std::fs::write(
        &config,
        format!(
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n\
             [ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n\
             [server]\nbasicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n\
             subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid,issuer\n\
             subjectAltName = {}\n",
            alt_names.join(",")
        ),
    )
    .expect("openssl.cnf");
    let path = |file: &str| dir.join(file).to_str().expect("a UTF-8 path").to_owned();
    let (config, ca_key, ca, key, csr, cert) = (
        path("openssl.cnf"),
        path("ca.key"),
        path("ca.pem"),
        path("server.key"),
        path("server.csr"),
        path("server.pem"),
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(&[
        &["req", "-x509", "-config", &config, "-extensions", "ca"],
        &ec[..],
        &["-keyout", &ca_key, "-out", &ca, "-days", "7"],
        &["-subj", &format!("/CN=repobox test CA for {common_name}")],
    ]);
    openssl(&[
        &["req", "-new", "-config", &config],
        &ec[..],
        &[
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={common_name}"),
        ],
    ]);
    openssl(&[
        &["x509", "-req", "-in", &csr, "-CA", &ca, "-CAkey", &ca_key],
        &["-CAcreateserial", "-days", "7", "-out", &cert],
        &["-extfile", &config, "-extensions", "server"],
    ]);
    (PathBuf::from(ca), PathBuf::from(cert), PathBuf::from(key))
}

fn openssl(args: &[&[&str]]) {
    let args = args.concat();
    if let Err(error) = quiet("openssl", &args) {
        panic!("openssl {}: {error}", args.join(" "));
    }
}

/// Runs `ip args`, panicking with its stderr if it fails.
fn ip(args: &[&str]) {
    if let Err(error) = quiet("ip", args) {
        panic!(
            "ip {}: {error} (test hosts need root and iproute2)",
            args.join(" ")
        );
    }
}

/// Runs a command; its stderr (or why it could not start) on failure.
fn quiet(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A command's stdout ("" if it fails).
fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}
