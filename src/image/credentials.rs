//! Registry credentials from `REGISTRY_AUTH_FILE` (Docker's `config.json`).

use super::*;

/// Docker's `config.json`, the part we read.
#[derive(Deserialize)]
pub(super) struct AuthFile {
    #[serde(default)]
    pub(super) auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
pub(super) struct AuthEntry {
    pub(super) auth: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
}

/// The credentials the auth file `text` holds for registry `host`, if any.
pub(super) fn credentials_in(text: &str, host: &str) -> anyhow::Result<Option<Credentials>> {
    let file: AuthFile = serde_json::from_str(text)?;
    for (server, entry) in file.auths {
        // Keys may be `host`, `https://host`, or `https://index.docker.io/v1/`.
        let bare = server
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let bare = bare.split('/').next().unwrap_or_default();
        let bare = match bare {
            "index.docker.io" | "registry-1.docker.io" => "docker.io",
            other => other,
        };
        if bare != host {
            continue;
        }
        let (username, password) = match (entry.auth, entry.username, entry.password) {
            (Some(auth), _, _) if !auth.is_empty() => {
                let decoded = base64::engine::general_purpose::STANDARD.decode(auth.trim())?;
                let decoded = String::from_utf8(decoded)?;
                let (user, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| anyhow::anyhow!("an `auth` entry is not user:password"))?;
                (user.to_owned(), password.to_owned())
            }
            (_, Some(user), Some(password)) => (user, password),
            _ => continue,
        };
        return Ok(Some(Credentials {
            server,
            username,
            password,
        }));
    }
    Ok(None)
}
