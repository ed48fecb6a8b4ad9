//! One connection to a sandbox's egress proxy: an HTTP `CONNECT` (the tunnel is opened
//! only after the TLS ClientHello's server name is checked too) or a plain HTTP request
//! in absolute form (sent upstream with `Connection: close`). Everything that comes
//! from the sandbox is bounded: the request head, the ClientHello, every wait.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::allow::Host;
use super::{Decision, SandboxEgress};

/// Largest request head (request line and headers) the proxy reads.
const MAX_HEAD: usize = 32 * 1024;
/// Largest TLS record the proxy reads to find the server name (a ClientHello).
const MAX_HELLO: usize = 16 * 1024 + 5;
/// How long the sandbox has to send its request head, and its ClientHello.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on resolving a name.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on connecting upstream (each address).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one connection from the sandbox.
pub(super) async fn serve<S>(mut client: S, egress: &SandboxEgress)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(4096);
    let head_len = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client, &mut buf)).await
    {
        Ok(Ok(Some(len))) => len,
        Ok(Ok(None)) => {
            let _ = respond(&mut client, 431, "the request head is too large").await;
            return;
        }
        Ok(Err(_)) | Err(_) => return,
    };
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut request = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = request.parse(&buf[..head_len]) else {
        let _ = respond(&mut client, 400, "not an HTTP request").await;
        return;
    };
    let method = request.method.unwrap_or_default().to_owned();
    let target = request.path.unwrap_or_default().to_owned();
    if method.eq_ignore_ascii_case("CONNECT") {
        let named = target.parse::<axum::http::uri::Authority>().ok();
        let Some((host, port)) = named.and_then(|named| host_and_port(&named, None)) else {
            let _ = respond(&mut client, 400, "CONNECT needs host:port").await;
            return;
        };
        let rest = buf[head_len..].to_vec();
        tunnel(client, egress, host, port, rest).await;
    } else {
        let Ok(uri) = target.parse::<axum::http::Uri>() else {
            let _ = respond(&mut client, 400, "the request target is not a URL").await;
            return;
        };
        if uri.scheme_str() != Some("http") {
            let _ = respond(
                &mut client,
                400,
                "this is an egress proxy: send http:// URLs in absolute form, https:// through CONNECT",
            )
            .await;
            return;
        }
        let Some((host, port)) = uri
            .authority()
            .and_then(|authority| host_and_port(authority, Some(80)))
        else {
            let _ = respond(&mut client, 400, "the URL has no host").await;
            return;
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        // The Host header is the URL's: one of the sandbox's own could send the request
        // to another site served at the allowed host's address (a CDN's).
        let authority = match uri
            .authority()
            .and_then(|a| a.port().map(|p| (a.host(), p)))
        {
            Some((host, port)) => format!("{host}:{port}"),
            None => uri.host().unwrap_or_default().to_owned(),
        };
        let mut upstream_head = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\n");
        for header in request.headers.iter() {
            let name = header.name.to_ascii_lowercase();
            if matches!(
                name.as_str(),
                "host" | "connection" | "proxy-connection" | "proxy-authorization" | "keep-alive"
            ) {
                continue;
            }
            upstream_head.push_str(header.name);
            upstream_head.push_str(": ");
            upstream_head.push_str(&String::from_utf8_lossy(header.value));
            upstream_head.push_str("\r\n");
        }
        upstream_head.push_str("Connection: close\r\n\r\n");
        let mut first = upstream_head.into_bytes();
        first.extend_from_slice(&buf[head_len..]);
        let Some(upstream) = open(&mut client, egress, &host, port).await else {
            return;
        };
        pipe(client, upstream, &first).await;
    }
}

/// `CONNECT host:port`: decides, connects, answers 200, checks the ClientHello's server
/// name against the list, then carries bytes both ways.
async fn tunnel<S>(mut client: S, egress: &SandboxEgress, host: Host, port: u16, mut rest: Vec<u8>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(upstream) = open(&mut client, egress, &host, port).await else {
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    // What the client sends first decides: a TLS ClientHello's server name must be
    // allowed too (else a tunnel to an allowed front could reach another name on it).
    let hello = tokio::time::timeout(HEAD_TIMEOUT, read_hello(&mut client, &mut rest)).await;
    match hello {
        Ok(Ok(Some(name))) => {
            let sni = Host::Name(name);
            if sni != host && !egress.allowed(&sni, port) {
                egress.record(Decision::denied(
                    &sni,
                    port,
                    format!("TLS server name {sni} (CONNECT {host}) is not on the allow-list"),
                ));
                return;
            }
        }
        Ok(Ok(None)) => {}
        Ok(Err(_)) | Err(_) => return,
    }
    pipe(client, upstream, &rest).await;
}

/// Decides on `host:port`, logs the decision, and connects; on a refusal or failure
/// answers the client (403, 502) and returns `None`.
async fn open<S>(
    client: &mut S,
    egress: &SandboxEgress,
    host: &Host,
    port: u16,
) -> Option<TcpStream>
where
    S: AsyncWrite + Unpin,
{
    let addresses = match egress.resolve(host, port).await {
        Ok(addresses) => addresses,
        Err(reason) => {
            let _ = respond(
                client,
                403,
                &format!("repobox egress: {host}:{port} refused: {reason}"),
            )
            .await;
            egress.record(Decision::denied(host, port, reason));
            return None;
        }
    };
    let mut last_error = String::from("no address");
    for address in addresses {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                egress.record(Decision::allowed(host, port));
                let _ = stream.set_nodelay(true);
                return Some(stream);
            }
            Ok(Err(error)) => last_error = error.to_string(),
            Err(_) => last_error = format!("no answer within {CONNECT_TIMEOUT:?}"),
        }
    }
    egress.record(Decision::failed(host, port, last_error.clone()));
    let _ = respond(
        client,
        502,
        &format!("repobox egress: cannot connect to {host}:{port}: {last_error}"),
    )
    .await;
    None
}

/// Sends `first` upstream, then carries bytes both ways until both sides are done.
async fn pipe<S>(mut client: S, mut upstream: TcpStream, first: &[u8])
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if upstream.write_all(first).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// Reads up to the end of the request head; `Some(length)` of the head, `None` when it
/// is larger than [`MAX_HEAD`].
async fn read_head<S>(client: &mut S, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>>
where
    S: AsyncRead + Unpin,
{
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(at + 4));
        }
        if buf.len() >= MAX_HEAD {
            return Ok(None);
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads the client's first TLS record into `buf` (which may hold its start already)
/// and returns the ClientHello's server name. `None`: not TLS, or no server name.
async fn read_hello<S>(client: &mut S, buf: &mut Vec<u8>) -> std::io::Result<Option<String>>
where
    S: AsyncRead + Unpin,
{
    let mut chunk = [0u8; 4096];
    while buf.is_empty() {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if buf[0] != 0x16 {
        return Ok(None);
    }
    loop {
        if buf.len() >= 5 {
            let record = 5 + usize::from(u16::from_be_bytes([buf[3], buf[4]]));
            if record > MAX_HELLO {
                return Err(std::io::Error::other("TLS record too large"));
            }
            if buf.len() >= record {
                return Ok(server_name(&buf[5..record]));
            }
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The `server_name` of a ClientHello handshake message (a TLS record's body).
fn server_name(hello: &[u8]) -> Option<String> {
    let mut r = Reader(hello);
    if r.u8()? != 1 {
        return None;
    }
    let len = r.u24()?;
    let body = r.take(len)?;
    let mut r = Reader(body);
    r.take(2 + 32)?; // version, random
    let session = usize::from(r.u8()?);
    r.take(session)?;
    let suites = usize::from(r.u16()?);
    r.take(suites)?;
    let compression = usize::from(r.u8()?);
    r.take(compression)?;
    let extensions = usize::from(r.u16()?);
    let mut r = Reader(r.take(extensions)?);
    while !r.0.is_empty() {
        let kind = r.u16()?;
        let len = usize::from(r.u16()?);
        let data = r.take(len)?;
        if kind != 0 {
            continue;
        }
        let mut names = Reader(data);
        let list = usize::from(names.u16()?);
        let mut names = Reader(names.take(list)?);
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let len = usize::from(names.u16()?);
            let name = names.take(len)?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                return match Host::parse(name)? {
                    Host::Name(name) => Some(name),
                    Host::Ip(_) => None,
                };
            }
        }
    }
    None
}

/// A cursor over bytes that fails (`None`) past their end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

/// The host and port an authority names (`default`: the port when it names none; a
/// CONNECT has no default).
fn host_and_port(
    authority: &axum::http::uri::Authority,
    default: Option<u16>,
) -> Option<(Host, u16)> {
    let port = authority.port_u16().or(default)?;
    Some((Host::parse(authority.host())?, port))
}

/// A short plain-text answer that closes the connection.
async fn respond<S>(client: &mut S, status: u16, text: &str) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        431 => "Request Header Fields Too Large",
        _ => "Bad Gateway",
    };
    let body = format!("{text}\n");
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(answer.as_bytes()).await?;
    client.shutdown().await
}

/// Whether `ip` is an address on the public internet: not loopback, private,
/// link-local (cloud metadata), shared (CGNAT), documentation-only, multicast,
/// unspecified or reserved, also when an IPv6 address maps or embeds an IPv4 one.
pub(super) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2002
                || (first == 0x64 && v6.segments()[1] == 0xff9b)
                || (first == 0x2001 && v6.segments()[1] == 0x0db8)
                || v6.segments()[..6] == [0, 0, 0, 0, 0, 0])
        }
    }
}

/// Resolves `name:port` within [`RESOLVE_TIMEOUT`].
pub(super) async fn lookup(name: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port))).await {
        Ok(Ok(addresses)) => Ok(addresses.collect()),
        Ok(Err(error)) => Err(format!("{name} does not resolve: {error}")),
        Err(_) => Err(format!("{name} did not resolve within {RESOLVE_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
        ] {
            assert!(
                !is_public(private.parse().unwrap()),
                "{private} counted as public"
            );
        }
        for public in ["198.51.100.2", "151.101.0.223", "2a04:4e42::223"] {
            assert!(
                is_public(public.parse().unwrap()),
                "{public} counted as private"
            );
        }
    }

    #[test]
    fn finds_the_server_name_of_a_client_hello() {
        // A ClientHello for "files.example" with one cipher suite and the SNI extension.
        let name = b"files.example";
        let mut sni = Vec::new();
        sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni.extend_from_slice(name);
        let mut extensions = vec![0, 0];
        extensions.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        extensions.extend_from_slice(&sni);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(&extensions);
        let mut hello = vec![1];
        hello.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hello.extend_from_slice(&body);
        assert_eq!(server_name(&hello).as_deref(), Some("files.example"));
        // Cut anywhere, it is no name, never a panic.
        for cut in 0..hello.len() {
            assert_eq!(server_name(&hello[..cut]), None);
        }
    }
}
