//! Credentials for private repositories (`GIT_CREDENTIALS_FILE`): git's credential-store
//! format, one `https://<user>:<token>@<host>[:<port>][/<path-prefix>]` per line. The
//! server's own fetches of a URL without credentials of its own use the longest entry
//! whose scheme, host, port and path prefix match.
//!
//! A token is only ever handed to git through its environment (`GIT_CONFIG_*`, an
//! `http.extraHeader`), never on a command line, in a URL git writes down, in an answer,
//! a log or a record; `Debug` shows hosts alone. `/info` lists the hosts.

use std::path::Path;

use url::Url;

/// One line of the file.
#[derive(Clone)]
struct Entry {
    scheme: String,
    host: String,
    port: Option<u16>,
    /// Path prefix, without a trailing slash (empty: the whole host).
    prefix: String,
    username: String,
    password: String,
}

/// The credentials of `GIT_CREDENTIALS_FILE`.
#[derive(Clone, Default)]
pub struct Credentials {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("hosts", &self.hosts())
            .finish()
    }
}

/// What a fetch sends: the `Authorization` header's value, and the secret to scrub
/// from git's messages.
pub(crate) struct Authorization {
    /// `Basic …`.
    pub header: String,
    /// The token as written in the file.
    pub token: String,
}

impl Credentials {
    /// Reads `path`; an empty path is no credentials. A line that is not a URL with a
    /// user and a token is an error naming its line number (never its content).
    pub fn load(path: &str) -> anyhow::Result<Self> {
        if path.is_empty() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(Path::new(path))
            .map_err(|err| anyhow::anyhow!("GIT_CREDENTIALS_FILE {path}: {err}"))?;
        Self::parse(&text).map_err(|line| {
            anyhow::anyhow!(
                "GIT_CREDENTIALS_FILE {path}, line {line}: not https://<user>:<token>@<host>[/<path>]"
            )
        })
    }

    /// Parses the file's text; `Err(line number)` on a bad line. Blank lines and lines
    /// starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<Self, usize> {
        let mut entries = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = number + 1;
            let url = Url::parse(line).map_err(|_| bad)?;
            let (Some(host), Some(password)) = (url.host_str(), url.password()) else {
                return Err(bad);
            };
            if !matches!(url.scheme(), "http" | "https") || url.username().is_empty() {
                return Err(bad);
            }
            entries.push(Entry {
                scheme: url.scheme().to_owned(),
                host: host.to_ascii_lowercase(),
                port: url.port(),
                prefix: url.path().trim_end_matches('/').to_owned(),
                username: super::percent_decoded(url.username()),
                password: super::percent_decoded(password),
            });
        }
        Ok(Self { entries })
    }

    /// The hosts that have credentials (`host` or `host:port`), sorted, once each.
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .entries
            .iter()
            .map(|entry| match entry.port {
                Some(port) => format!("{}:{port}", entry.host),
                None => entry.host.clone(),
            })
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// The authorization for `url`: the longest matching entry's (`None`: no entry
    /// matches).
    pub(crate) fn for_url(&self, url: &Url) -> Option<Authorization> {
        let host = url.host_str()?.to_ascii_lowercase();
        let path = url.path();
        self.entries
            .iter()
            .filter(|entry| {
                entry.scheme == url.scheme()
                    && entry.host == host
                    && entry.port == url.port()
                    && (entry.prefix.is_empty()
                        || path == entry.prefix
                        || path.starts_with(&format!("{}/", entry.prefix)))
            })
            .max_by_key(|entry| entry.prefix.len())
            .map(|entry| {
                use base64::Engine as _;
                let pair = format!("{}:{}", entry.username, entry.password);
                Authorization {
                    header: format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(pair)
                    ),
                    token: entry.password.clone(),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# private repositories\n\
        https://bot:tok-host@git.example.com\n\
        \n\
        https://bot:tok-team@git.example.com/team\n\
        http://ci:tok-local@127.0.0.1:8080/repos/private\n";

    fn token(credentials: &Credentials, url: &str) -> Option<String> {
        credentials
            .for_url(&Url::parse(url).unwrap())
            .map(|auth| auth.token)
    }

    #[test]
    fn the_longest_matching_entry_wins() {
        let credentials = Credentials::parse(FILE).unwrap();
        assert_eq!(
            token(&credentials, "https://git.example.com/team/app.git").as_deref(),
            Some("tok-team")
        );
        assert_eq!(
            token(&credentials, "https://git.example.com/other/app.git").as_deref(),
            Some("tok-host")
        );
        // A prefix matches whole path segments only.
        assert_eq!(
            token(&credentials, "https://git.example.com/teammate/app.git").as_deref(),
            Some("tok-host")
        );
        assert_eq!(
            token(&credentials, "http://127.0.0.1:8080/repos/private/x.git").as_deref(),
            Some("tok-local")
        );
        // Scheme, port and host must match.
        assert_eq!(
            token(&credentials, "http://git.example.com/team/app.git"),
            None
        );
        assert_eq!(
            token(&credentials, "http://127.0.0.1:8081/repos/private/x.git"),
            None
        );
        assert_eq!(
            token(&credentials, "https://example.com/team/app.git"),
            None
        );
    }

    #[test]
    fn the_header_is_basic_auth_of_user_and_token() {
        let credentials = Credentials::parse("https://bot:s%40cret@h.example/\n").unwrap();
        let auth = credentials
            .for_url(&Url::parse("https://h.example/r.git").unwrap())
            .unwrap();
        assert_eq!(auth.token, "s@cret");
        assert_eq!(auth.header, "Basic Ym90OnNAY3JldA==");
    }

    #[test]
    fn a_bad_line_is_named_by_its_number_alone_and_debug_shows_hosts() {
        assert_eq!(
            Credentials::parse("https://a:b@h.example\nhttps://no-token@h.example\n").err(),
            Some(2)
        );
        assert_eq!(Credentials::parse("ssh://a:b@h.example\n").err(), Some(1));
        assert_eq!(Credentials::parse("not a url\n").err(), Some(1));
        let credentials = Credentials::parse(FILE).unwrap();
        let debug = format!("{credentials:?}");
        assert!(!debug.contains("tok-"), "{debug}");
        assert_eq!(credentials.hosts(), ["127.0.0.1:8080", "git.example.com"]);
    }
}
