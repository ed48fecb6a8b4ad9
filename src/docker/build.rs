//! Image builds on the engine's classic builder, every step in a process-limited cgroup.
//!
//! bollard cannot name a build's cgroup parent, so this file sends `POST /build` itself
//! (HTTP/1.1 over the engine's socket) and reads its JSON answer. Each build gets a
//! cgroup of its own, `/repobox-builds/<name>`, whose `pids.max` bounds every step's
//! processes together; the cgroup is removed when the build ends. This needs Docker's
//! `cgroupfs` driver and the engine host's cgroup tree writable at `BUILD_CGROUP_ROOT`;
//! without them a build is refused with the reason rather than run without a bound.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::backend::{BodyStream, BuildEvent, BuildSpec};
use crate::error::{Error, Result};

/// The cgroup (relative to each hierarchy's root) under which builds get theirs.
const BUILDS_CGROUP: &str = "repobox-builds";

/// Longest JSON message the engine's answer may hold; the engine writes a step's
/// output in small pieces, so only a broken engine reaches it.
const MAX_MESSAGE: usize = 4 << 20;

/// How long connecting to the engine may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a build's cgroup lives.
#[derive(Debug, Clone)]
struct CgroupPath {
    /// The host's cgroup tree.
    root: PathBuf,
    /// The cgroup's path below the root, as the engine is told it.
    parent: String,
    /// cgroup v2 (one unified hierarchy).
    unified: bool,
}

/// A build's cgroup: made with its `pids.max` before the build, removed when dropped.
#[derive(Debug)]
pub(super) struct BuildCgroup(CgroupPath);

impl BuildCgroup {
    /// Makes `/repobox-builds/<name>` under the host's cgroup tree at `root`, limited
    /// to `pids` processes. `driver` is the engine's cgroup driver (`docker info`).
    pub(super) fn make(root: &Path, driver: &str, name: &str, pids: i64) -> Result<Self> {
        let refused = |why: String| {
            Error::ImageUnavailable(format!(
                "build steps cannot be given a process limit, so builds are refused: {why}"
            ))
        };
        if driver != "cgroupfs" {
            return Err(refused(format!(
                "the engine's cgroup driver is {driver:?}; repobox limits build steps with \
                 the cgroupfs driver only"
            )));
        }
        let path = CgroupPath {
            root: root.to_owned(),
            parent: format!("/{BUILDS_CGROUP}/{name}"),
            unified: root.join("cgroup.controllers").exists(),
        };
        let parent = path.parent.clone();
        // Made in full or not at all: a half-made cgroup is removed on the way out.
        let cgroup = Self(path);
        let made = if cgroup.0.unified {
            cgroup.0.make_unified(pids)
        } else {
            cgroup.0.make_v1(pids)
        };
        made.map_err(|err| {
            refused(format!(
                "cannot prepare the cgroup {parent} under {} (BUILD_CGROUP_ROOT): {err}",
                root.display()
            ))
        })?;
        Ok(cgroup)
    }

    /// The cgroup parent the engine is told.
    pub(super) fn parent(&self) -> &str {
        &self.0.parent
    }
}

impl Drop for BuildCgroup {
    fn drop(&mut self) {
        let path = self.0.clone();
        crate::off_the_workers(move || path.remove());
    }
}

impl CgroupPath {
    fn make_v1(&self, pids: i64) -> std::io::Result<()> {
        let dir = self
            .root
            .join("pids")
            .join(self.parent.trim_start_matches('/'));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("pids.max"), pids.to_string())
    }

    fn make_unified(&self, pids: i64) -> std::io::Result<()> {
        let builds = self.root.join(BUILDS_CGROUP);
        std::fs::create_dir_all(&builds)?;
        // The pids controller is handed down to the builds' cgroups and below.
        std::fs::write(self.root.join("cgroup.subtree_control"), "+pids")?;
        std::fs::write(builds.join("cgroup.subtree_control"), "+pids")?;
        let dir = self.root.join(self.parent.trim_start_matches('/'));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("pids.max"), pids.to_string())
    }

    /// Removes the cgroup (every hierarchy's copy on v1); one that still holds a
    /// process (a step the engine has not removed yet) stays, and is logged.
    fn remove(&self) {
        let below = self.parent.trim_start_matches('/');
        let dirs: Vec<PathBuf> = if self.unified {
            vec![self.root.join(below)]
        } else {
            std::fs::read_dir(&self.root)
                .map(|entries| {
                    entries
                        .filter_map(|entry| entry.ok())
                        .map(|entry| entry.path().join(below))
                        .filter(|dir| dir.is_dir())
                        .collect()
                })
                .unwrap_or_default()
        };
        for dir in dirs {
            // The engine may leave its (empty) per-step cgroups under ours; cgroups
            // are removed leaves first.
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for entry in entries.filter_map(|entry| entry.ok()) {
                    if entry.path().is_dir() {
                        let _ = std::fs::remove_dir(entry.path());
                    }
                }
            }
            if let Err(err) = std::fs::remove_dir(&dir)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(cgroup = %dir.display(), error = %err, "a build's cgroup was left behind");
            }
        }
    }
}

/// One message of the engine's build answer.
#[derive(Debug, Default, Deserialize)]
struct Message {
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorDetail")]
    error_detail: Option<ErrorDetail>,
    #[serde(default)]
    aux: Option<Aux>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Aux {
    #[serde(default, rename = "ID")]
    id: Option<String>,
}

impl Message {
    fn events(self) -> Vec<Result<BuildEvent>> {
        if let Some(error) = self
            .error_detail
            .and_then(|detail| detail.message)
            .or(self.error)
        {
            return vec![Err(Error::ImageUnavailable(error))];
        }
        let mut events = Vec::new();
        if let Some(text) = self.stream.filter(|text| !text.is_empty()) {
            events.push(Ok(BuildEvent::Log(text)));
        }
        if let Some(status) = self.status.filter(|text| !text.is_empty()) {
            events.push(Ok(BuildEvent::Log(format!("{status}\n"))));
        }
        if let Some(id) = self.aux.and_then(|aux| aux.id) {
            events.push(Ok(BuildEvent::Built(id)));
        }
        events
    }
}

/// The query of `POST /build` for `spec`, its steps under `cgroup_parent`.
fn query(spec: &BuildSpec, cgroup_parent: &str) -> Result<String> {
    let memory = spec.memory_mb.saturating_mul(1024 * 1024).to_string();
    let pairs = [
        ("dockerfile", spec.dockerfile.clone()),
        ("t", spec.reference.clone()),
        ("rm", "1".to_owned()),
        ("forcerm", "1".to_owned()),
        ("memory", memory.clone()),
        ("memswap", memory),
        ("buildargs", to_json(&spec.build_args)?),
        ("labels", to_json(&spec.labels)?),
        (
            "networkmode",
            if spec.network { "default" } else { "none" }.to_owned(),
        ),
        ("cgroupparent", cgroup_parent.to_owned()),
        // The classic builder: it takes a network mode, limits and a cgroup parent.
        ("version", "1".to_owned()),
    ];
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        query.append_pair(key, &value);
    }
    Ok(query.finish())
}

/// `value` as JSON (for a query parameter).
fn to_json(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|err| Error::internal(err.to_string()))
}

/// Sends `POST /build` to the engine at `host` (`unix://…`, a path, or `tcp://`/`http://`)
/// with `context` as its body; the answer's messages go to `tx` as build events until
/// the build ends, fails, or `tx` is closed.
pub(super) async fn run(
    host: &str,
    context: BodyStream,
    spec: &BuildSpec,
    cgroup_parent: &str,
    tx: &tokio::sync::mpsc::Sender<Result<BuildEvent>>,
) -> Result<()> {
    let unavailable =
        |err: &dyn std::fmt::Display| Error::EngineUnavailable(format!("Docker build: {err}"));
    let frames: fn(
        std::io::Result<bytes::Bytes>,
    ) -> std::io::Result<hyper::body::Frame<bytes::Bytes>> =
        |chunk| chunk.map(hyper::body::Frame::data);
    let body: Body = StreamBody::new(context.map(frames));
    let request = hyper::Request::post(format!("/build?{}", query(spec, cgroup_parent)?))
        .header(hyper::header::HOST, "docker")
        .header(hyper::header::CONTENT_TYPE, "application/x-tar")
        .body(body)
        .map_err(|err| Error::internal(err.to_string()))?;
    let (mut sender, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connect(host))
        .await
        .map_err(|_| unavailable(&"no connection within 30 s"))?
        .map_err(|err| unavailable(&err))?;
    // The connection is driven beside the request, and ends with it.
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| unavailable(&err))?;
        let status = response.status();
        let mut body = response.into_body();
        let mut buffer = BytesMut::new();
        if !status.is_success() {
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.map_err(|err| unavailable(&err))?.into_data() {
                    buffer.extend_from_slice(&data);
                }
                if buffer.len() > MAX_MESSAGE {
                    break;
                }
            }
            let message = serde_json::from_slice::<serde_json::Value>(&buffer)
                .ok()
                .and_then(|value| value["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&buffer).into_owned());
            return Err(if status.is_client_error() {
                Error::ImageUnavailable(message)
            } else {
                Error::internal(format!("Docker answered {status}: {message}"))
            });
        }
        loop {
            let frame = tokio::select! {
                () = tx.closed() => return Ok(()),
                frame = body.frame() => frame,
            };
            let Some(frame) = frame else { break };
            let Ok(data) = frame.map_err(|err| unavailable(&err))?.into_data() else {
                continue;
            };
            buffer.extend_from_slice(&data);
            for message in take_messages(&mut buffer)? {
                for event in message.events() {
                    let failed = event.is_err();
                    if tx.send(event).await.is_err() {
                        return Ok(());
                    }
                    if failed {
                        return Ok(());
                    }
                }
            }
        }
        if !buffer.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::internal(
                "Docker's build answer ended inside a message".to_owned(),
            ));
        }
        Ok(())
    };
    tokio::select! {
        result = exchange => result,
        result = connection => match result {
            Ok(()) => Err(unavailable(&"the engine closed the connection")),
            Err(err) => Err(unavailable(&err)),
        },
    }
}

/// A request body of the build's context.
type Body = StreamBody<
    futures_util::stream::Map<
        BodyStream,
        fn(std::io::Result<bytes::Bytes>) -> std::io::Result<hyper::body::Frame<bytes::Bytes>>,
    >,
>;

/// The connection to the engine, driven beside its one request.
type Connection = std::pin::Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// An HTTP/1.1 connection to the engine at `host`.
async fn connect(
    host: &str,
) -> std::io::Result<(hyper::client::conn::http1::SendRequest<Body>, Connection)> {
    async fn over<IO>(
        io: IO,
    ) -> std::io::Result<(hyper::client::conn::http1::SendRequest<Body>, Connection)>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(std::io::Error::other)?;
        Ok((sender, Box::pin(connection)))
    }
    if let Some(path) = host
        .strip_prefix("unix://")
        .or(host.starts_with('/').then_some(host))
    {
        over(tokio::net::UnixStream::connect(path).await?).await
    } else {
        let address = host
            .trim_start_matches("tcp://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        over(tokio::net::TcpStream::connect(address).await?).await
    }
}

/// The complete JSON messages at the front of `buffer` (the engine writes them one
/// after another, usually one per line); what follows stays for the next read.
fn take_messages(buffer: &mut BytesMut) -> Result<Vec<Message>> {
    let mut messages = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(buffer).into_iter::<Message>();
    let mut consumed = 0;
    loop {
        match stream.next() {
            Some(Ok(message)) => {
                consumed = stream.byte_offset();
                messages.push(message);
            }
            Some(Err(err)) if err.is_eof() => break,
            Some(Err(err)) => {
                return Err(Error::internal(format!(
                    "unexpected build answer from Docker: {err}"
                )));
            }
            None => {
                consumed = buffer.len();
                break;
            }
        }
    }
    buffer.advance(consumed);
    if buffer.len() > MAX_MESSAGE {
        return Err(Error::internal(
            "a message of Docker's build answer is beyond 4 MiB".to_owned(),
        ));
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_across_reads_are_joined_and_errors_end_the_build() {
        let mut buffer =
            BytesMut::from(&b"{\"stream\":\"Step 1/2\\n\"}\r\n{\"aux\":{\"ID\":\"sha"[..]);
        let mut first = take_messages(&mut buffer).unwrap();
        assert_eq!(first.len(), 1);
        assert!(
            matches!(&first.remove(0).events()[..], [Ok(BuildEvent::Log(text))] if text == "Step 1/2\n")
        );
        buffer.extend_from_slice(
            b"256:ab\"}}\n{\"errorDetail\":{\"message\":\"no\"},\"error\":\"no\"}\n",
        );
        let mut rest = take_messages(&mut buffer).unwrap();
        assert!(
            matches!(&rest.remove(0).events()[..], [Ok(BuildEvent::Built(id))] if id == "sha256:ab")
        );
        assert!(
            matches!(&rest.remove(0).events()[..], [Err(Error::ImageUnavailable(text))] if text == "no")
        );
        assert!(buffer.is_empty());
        let mut broken = BytesMut::from(&b"{\"stream\": ]"[..]);
        assert!(take_messages(&mut broken).is_err());
    }

    #[test]
    fn the_query_names_the_cgroup_and_the_limits() {
        let spec = BuildSpec {
            reference: "repobox-image:x".to_owned(),
            dockerfile: "Dockerfile".to_owned(),
            build_args: [("A".to_owned(), "b c".to_owned())].into(),
            labels: Default::default(),
            network: false,
            memory_mb: 2,
            pids: 64,
        };
        let query = query(&spec, "/repobox-builds/x").unwrap();
        for part in [
            "cgroupparent=%2Frepobox-builds%2Fx",
            "networkmode=none",
            "memory=2097152",
            "buildargs=%7B%22A%22%3A%22b+c%22%7D",
            "version=1",
        ] {
            assert!(query.contains(part), "{query}");
        }
    }

    #[test]
    fn a_systemd_engine_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let err = BuildCgroup::make(dir.path(), "systemd", "x", 64).unwrap_err();
        assert!(err.to_string().contains("cgroupfs"), "{err}");
    }

    #[test]
    fn a_v1_cgroup_gets_its_limit_and_is_removed_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pids")).unwrap();
        std::fs::create_dir_all(dir.path().join("memory/repobox-builds/b1")).unwrap();
        let cgroup = BuildCgroup::make(dir.path(), "cgroupfs", "b1", 64).unwrap();
        assert_eq!(cgroup.parent(), "/repobox-builds/b1");
        let limit = dir.path().join("pids/repobox-builds/b1/pids.max");
        assert_eq!(std::fs::read_to_string(&limit).unwrap(), "64");
        // A plain directory (unlike a cgroup) keeps its files: clear them as the
        // kernel would.
        std::fs::remove_file(&limit).unwrap();
        drop(cgroup);
        assert!(!dir.path().join("pids/repobox-builds/b1").exists());
        assert!(!dir.path().join("memory/repobox-builds/b1").exists());
    }
}
