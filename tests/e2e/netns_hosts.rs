//! The egress tests' stand-in internet hosts (`support::netns`): reachable from the
//! root namespace by address and by name over HTTP, HTTPS and pip, logging what
//! reaches them and nothing else.

use std::process::Command;
use std::time::Instant;

use crate::support::netns::TestHost;
use crate::support::scratch;

const NAME: &str = "pypi.example.test";

/// curl from the root namespace (no proxy from the environment); its stdout.
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--noproxy", "*"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `command` with `pip3 download` of tinypkg from the index at [`NAME`] added to
/// its arguments; pip's output.
fn pip_download(mut command: Command) -> String {
    let out = command
        .args([
            "pip3",
            "download",
            "--isolated",
            "--no-deps",
            "--no-cache-dir",
        ])
        .args(["--disable-pip-version-check", "--index-url"])
        .arg(format!("https://{NAME}/simple/"))
        .env("NO_PROXY", "*")
        .env("no_proxy", "*")
        // --isolated leaves out PIP_* and pip.conf (on this machine they name a CA bundle and
        // a wheel directory); requests' own variables would win over pip's --cert.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .output()
        .expect("run pip3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pip3 download failed: {text}");
    text
}

#[tokio::test]
async fn a_test_host_serves_http_https_and_an_index() {
    let started = Instant::now();
    let host = TestHost::start(&[NAME, "files.example.test"]);
    eprintln!("test host up in {:?}", started.elapsed());
    // A second host at once, on addresses of its own: it must see none of the traffic.
    let other = TestHost::start(&["other.example.test"]);
    let (public, private) = (host.public(), host.private());
    assert_eq!(public.octets()[..3], [198, 51, 100]);
    assert!(
        !public.is_private() && private.is_private(),
        "{public} {private}"
    );
    assert_ne!(public, other.public());
    assert_ne!(private, other.private());
    assert!(host.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert_ne!(host.ca_pem(), other.ca_pem());
    assert_eq!(
        host.requests(),
        Vec::<String>::new(),
        "probes are not requests"
    );

    // HTTP by address; HTTPS by name, the certificate checked against the host's CA.
    assert_eq!(
        curl(&[&format!("http://{public}/hello")]),
        format!("hello from {NAME}\n")
    );
    let ca = host.ca_path().to_str().unwrap();
    let resolve = format!("{NAME}:443:{public}");
    assert_eq!(
        curl(&[
            "--resolve",
            &resolve,
            "--cacert",
            ca,
            &format!("https://{NAME}/hello")
        ]),
        format!("hello from {NAME}\n")
    );
    // HTTPS at the private address (in the certificate too), from rustls.
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(host.ca_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let hello = client
        .get(format!("https://{private}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(hello.status(), 200);
    assert_eq!(hello.text().await.unwrap(), format!("hello from {NAME}\n"));
    // Another CA's certificate is refused.
    let wrong = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--noproxy",
            "*",
            "--resolve",
            &resolve,
        ])
        .args(["--cacert", other.ca_path().to_str().unwrap()])
        .arg(format!("https://{NAME}/hello"))
        .output()
        .unwrap();
    assert!(
        !wrong.status.success(),
        "a certificate of another CA passed"
    );

    // The index, as pip sees it: by the sandbox image's pip3, on the host's network
    // with the name in its /etc/hosts (the image every sandbox uses has to work with it).
    let dir = scratch();
    let mut docker = Command::new("docker");
    docker
        .args(["run", "--rm", "--network", "host", "--add-host"])
        .arg(format!("{NAME}:{public}"))
        .arg("-v")
        .arg(format!("{ca}:/ca.pem:ro"))
        .args([repobox::config::DEFAULT_BASE_IMAGE, "sh", "-c"])
        .arg(r#"exec "$@" --cert /ca.pem -d /tmp/dl tinypkg && ls /tmp/dl"#)
        .arg("sh");
    let saw = pip_download(docker);
    assert!(saw.contains("tinypkg-1.0-py3-none-any.whl"), "{saw}");
    let mut pulls = 1;
    // And by this machine's pip3, if it has one, with the name in a private /etc/hosts.
    if Command::new("pip3")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
    {
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, format!("127.0.0.1 localhost\n{public} {NAME}\n")).unwrap();
        let mut unshare = Command::new("unshare");
        unshare
            .args(["--mount", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/hosts && exec "$@" --cert "$CA" -d "$DEST" tinypkg"#)
            .arg(&hosts)
            .env("CA", ca)
            .env("DEST", dir.path().join("dl"));
        pip_download(unshare);
        assert!(dir.path().join("dl/tinypkg-1.0-py3-none-any.whl").is_file());
        pulls += 1;
    } else {
        eprintln!("no pip3 on this machine: only the sandbox image's pip3 was tried");
    }

    let requests = host.requests();
    let mut expected = vec![
        format!("GET /hello {public}"),
        format!("GET /hello {NAME}"),
        format!("GET /hello {private}"),
    ];
    for _ in 0..pulls {
        expected.push(format!("GET /simple/tinypkg/ {NAME}"));
        expected.push(format!("GET /packages/tinypkg-1.0-py3-none-any.whl {NAME}"));
    }
    assert_eq!(requests, expected);
    assert_eq!(other.requests(), Vec::<String>::new());
}
