//! Image references: their normal form, the `ALLOWED_IMAGES` patterns and which
//! registries a reference may name, and the Dockerfile checks of a build.

use super::*;

/// `reference` as the engine names it: registry, repository and tag in full
/// (`node:20` is `docker.io/library/node:20`, `x` is `docker.io/library/x:latest`).
pub fn normalize(reference: &str) -> String {
    let (host, rest) = split_registry(reference);
    let rest = if host == "docker.io" && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest.to_owned()
    };
    let last = rest.rsplit('/').next().unwrap_or_default();
    let tagged = last.contains(':') || last.contains('@');
    format!("{host}/{rest}{}", if tagged { "" } else { ":latest" })
}

/// The registry `reference` is pulled from (`docker.io` when it names none).
pub fn registry_host(reference: &str) -> String {
    split_registry(reference).0.to_owned()
}

pub(super) fn split_registry(reference: &str) -> (&str, &str) {
    match reference.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            let host = match first {
                "index.docker.io" | "registry-1.docker.io" => "docker.io",
                other => other,
            };
            (host, rest)
        }
        _ => ("docker.io", reference),
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Whether `ALLOWED_IMAGES` lets a request name `reference` (matched as written and
/// in its full form, so `docker.io/library/*` covers `node:20`).
///
/// A registry on a host-only address (`localhost`, a loopback, private, link-local or
/// unspecified IP literal) is the engine's host's business, not a client's: the engine
/// would fetch from services that listen only there (a metadata endpoint, a local
/// registry). Such a reference needs a pattern that names that registry as written,
/// with no `*` in its host, even when `ALLOWED_IMAGES` is empty (any image).
pub fn allowed(patterns: &[String], reference: &str) -> bool {
    let full = normalize(reference);
    let matches = |pattern: &String| glob_match(pattern, reference) || glob_match(pattern, &full);
    let host = registry_host(reference);
    if is_host_only(&host) {
        return patterns.iter().any(|pattern| {
            let named = host_name(split_registry(pattern).0);
            !named.contains('*') && named.eq_ignore_ascii_case(host_name(&host)) && matches(pattern)
        });
    }
    patterns.is_empty() || patterns.iter().any(matches)
}

/// Whether the registry `host` (`name[:port]`, `[v6][:port]`) is `localhost` or an IP
/// literal the engine's host alone can reach. Names that merely resolve to such an
/// address are not seen here (the engine resolves them): `ALLOWED_IMAGES` is the bound
/// for those.
pub(super) fn is_host_only(host: &str) -> bool {
    let name = host_name(host).trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    let ip = match name.parse::<std::net::IpAddr>() {
        Ok(ip) => ip,
        Err(_) => match inet_aton(&name) {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => return false,
        },
    };
    let v4_host_only = |v4: std::net::Ipv4Addr| {
        let [a, b, ..] = v4.octets();
        v4.is_loopback()
            || v4.is_private()
            || v4.is_link_local()
            || v4.is_unspecified()
            || v4.is_broadcast()
            || (a == 100 && (64..128).contains(&b)) // shared address space (RFC 6598)
    };
    match ip {
        std::net::IpAddr::V4(v4) => v4_host_only(v4),
        std::net::IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || v6.to_ipv4_mapped().is_some_and(v4_host_only)
        }
    }
}

/// A registry's host without its port (and an IPv6 literal without its brackets).
pub(super) fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(name, _port)| name)
    }
}

/// An IPv4 address in the forms the C library's resolver also takes (`127.1`,
/// `0x7f000001`, `2130706433`, `0177.0.0.1`), which `Ipv4Addr::from_str` refuses.
pub(super) fn inet_aton(name: &str) -> Option<std::net::Ipv4Addr> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut numbers = Vec::with_capacity(parts.len());
    for part in &parts {
        let (digits, radix) =
            if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
                (hex, 16)
            } else if part.len() > 1 && part.starts_with('0') {
                (&part[1..], 8)
            } else {
                (*part, 10)
            };
        if digits.is_empty() && radix != 16 || !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        numbers
            .push(u64::from_str_radix(if digits.is_empty() { "0" } else { digits }, radix).ok()?);
    }
    let (last, first) = numbers.split_last()?;
    if first.iter().any(|&n| n > 255) || *last >= 1u64 << (8 * (4 - first.len())) {
        return None;
    }
    let mut value = *last;
    for (i, &n) in first.iter().enumerate() {
        value |= n << (8 * (3 - i));
    }
    Some(std::net::Ipv4Addr::from(u32::try_from(value).ok()?))
}

/// Checks `image` is a reference a request may name; 400 otherwise.
pub fn validate_reference(config: &Config, image: &str) -> Result<()> {
    if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid("image must be a non-empty image reference"));
    }
    if image != config.docker_base_image && !allowed(config.allowed_images.items(), image) {
        return Err(Error::invalid(format!(
            "image {image:?} is not in ALLOWED_IMAGES ({})",
            config.allowed_images.items().join(", ")
        )));
    }
    Ok(())
}

/// Checks what a Dockerfile fetches before the engine sees it: every base (`FROM`, and
/// `COPY`/`ADD --from=`) that is not an earlier stage must be one a request could name
/// ([`validate_reference`]; a base built from `$` variables is refused rather than
/// resolved), and `ADD` of a URL or a git repository is refused while builds have no
/// network (`BUILD_NETWORK=none`): the engine's own daemon would fetch it, from the
/// host's network. Instructions are case-insensitive, continuation lines joined (with
/// the `# escape=` directive honoured) and comments skipped, as the engine reads them.
pub fn check_dockerfile(config: &Config, text: &str) -> Result<()> {
    let refuse = |what: String| Err(Error::invalid(format!("the Dockerfile {what}")));
    let mut stages: Vec<String> = Vec::new();
    for instruction in dockerfile_instructions(text) {
        let mut words = instruction.split_whitespace();
        let keyword = words.next().unwrap_or_default().to_ascii_uppercase();
        let args: Vec<&str> = words.collect();
        let base_ok = |base: &str, stages: &[String]| -> Result<()> {
            let lower = base.to_ascii_lowercase();
            if lower == "scratch" || stages.contains(&lower) {
                return Ok(());
            }
            if base.contains('$') {
                return refuse(format!(
                    "names a base through a variable ({base:?}): name it in full so that ALLOWED_IMAGES can be checked"
                ));
            }
            validate_reference(config, base).map_err(|err| {
                Error::invalid(format!(
                    "the Dockerfile's base: {}",
                    err.public_body().detail
                ))
            })
        };
        match keyword.as_str() {
            "FROM" => {
                let plain: Vec<&str> = args
                    .iter()
                    .copied()
                    .filter(|a| !a.starts_with("--"))
                    .collect();
                let Some(base) = plain.first() else {
                    return refuse("has a FROM without an image".to_owned());
                };
                base_ok(base, &stages)?;
                if let [_, as_word, name, ..] = plain[..]
                    && as_word.eq_ignore_ascii_case("as")
                {
                    stages.push(name.to_ascii_lowercase());
                }
                stages.push(stages.len().to_string());
            }
            "COPY" | "ADD" => {
                for flag in args.iter().take_while(|a| a.starts_with("--")) {
                    if let Some(from) = flag
                        .strip_prefix("--from=")
                        .or_else(|| flag.strip_prefix("--FROM="))
                        && !from.chars().all(|c| c.is_ascii_digit())
                    {
                        base_ok(from, &stages)?;
                    }
                }
                if keyword == "ADD" && config.build_network == crate::config::BuildNetwork::None {
                    let rest = instruction[instruction
                        .find(char::is_whitespace)
                        .unwrap_or(instruction.len())..]
                        .trim();
                    let sources: Vec<String> = if rest.starts_with('[') {
                        serde_json::from_str::<Vec<String>>(rest).unwrap_or_default()
                    } else {
                        args.iter()
                            .filter(|a| !a.starts_with("--"))
                            .map(|a| (*a).to_owned())
                            .collect()
                    };
                    if let Some(url) = sources.iter().find(|s| {
                        let lower = s.to_ascii_lowercase();
                        lower.contains("://") || lower.starts_with("git@")
                    }) {
                        return refuse(format!(
                            "fetches {url:?} with ADD: builds have no network here (BUILD_NETWORK=none) and the engine would fetch it from the host's"
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The instructions of a Dockerfile, one string each (continuations joined, comments
/// and blank lines gone).
pub(super) fn dockerfile_instructions(text: &str) -> Vec<String> {
    let mut escape = '\\';
    let mut lines = text.lines().peekable();
    // Parser directives: `# name=value` lines at the very top.
    while let Some(line) = lines.peek() {
        let Some(directive) = line.trim().strip_prefix('#') else {
            break;
        };
        match directive.split_once('=') {
            Some((name, value)) if !name.trim().contains(' ') => {
                if name.trim().eq_ignore_ascii_case("escape") {
                    escape = value.trim().chars().next().unwrap_or('\\');
                }
                lines.next();
            }
            _ => break,
        }
    }
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in lines {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && !current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix(escape) {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                if !current.trim().is_empty() {
                    instructions.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
    }
    if !current.trim().is_empty() {
        instructions.push(current);
    }
    instructions
}

/// Whether `reference` is an image repobox made (a snapshot or a build): never pulled.
pub(super) fn is_ours(reference: &str) -> bool {
    reference.starts_with(BUILT_PREFIX) || reference.starts_with(SNAPSHOT_PREFIX)
}
