//! Recipes: a repository's Dockerfile, or its devcontainer configuration turned into
//! one (image, build, `containerEnv`, `postCreateCommand`).

use super::*;

/// A devcontainer configuration, the fields repobox reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DevContainer {
    pub(super) image: Option<String>,
    pub(super) build: Option<DevContainerBuild>,
    /// The older spelling of `build.dockerfile`.
    pub(super) docker_file: Option<String>,
    /// The older spelling of `build.context`.
    pub(super) context: Option<String>,
    #[serde(default)]
    pub(super) container_env: BTreeMap<String, String>,
    pub(super) post_create_command: Option<serde_json::Value>,
    pub(super) features: Option<serde_json::Value>,
    pub(super) docker_compose_file: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DevContainerBuild {
    pub(super) dockerfile: Option<String>,
    pub(super) context: Option<String>,
    #[serde(default)]
    pub(super) args: BTreeMap<String, String>,
}

/// What to build, read from the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Recipe {
    /// A devcontainer's `image`: nothing to build, pull it.
    pub(super) image: Option<String>,
    /// Directory of the context in the repository (`""`: the root).
    pub(super) context: String,
    /// The Dockerfile, relative to the context.
    pub(super) dockerfile: String,
    /// The Dockerfile in the repository.
    pub(super) dockerfile_in_repo: String,
    pub(super) build_args: BTreeMap<String, String>,
    pub(super) container_env: BTreeMap<String, String>,
    pub(super) post_create_command: Option<String>,
    /// The configuration file's text (part of the image's id).
    pub(super) config: String,
}

/// `path` inside the repository, normalized (`a/./b/../c` is `a/c`); `None` when it
/// leaves the repository or is absolute.
pub(super) fn repo_path(path: &str) -> Option<String> {
    if path.starts_with('/') || path.contains('\0') || path.contains('\\') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

pub(super) fn join(dir: &str, path: &str) -> String {
    if dir.is_empty() {
        path.to_owned()
    } else {
        format!("{dir}/{path}")
    }
}

/// A devcontainer's `postCreateCommand` as one shell command: a string as is, an
/// array as its words quoted, an object's commands one after another (the spec runs
/// them in parallel; in order is what one shell can promise).
pub(super) fn post_create_command(value: &serde_json::Value) -> Result<Option<String>> {
    use serde_json::Value;
    let invalid = || {
        Error::invalid(
            "devcontainer.json: postCreateCommand must be a string, an array of strings or an object of those",
        )
    };
    let one = |value: &Value| -> Result<String> {
        match value {
            Value::String(command) => Ok(command.clone()),
            Value::Array(words) => words
                .iter()
                .map(|word| word.as_str().map(shell_quote).ok_or_else(invalid))
                .collect::<Result<Vec<_>>>()
                .map(|words| words.join(" ")),
            _ => Err(invalid()),
        }
    };
    let command = match value {
        Value::Null => return Ok(None),
        Value::Object(commands) => commands
            .values()
            .map(one)
            .collect::<Result<Vec<_>>>()?
            .join(" && "),
        other => one(other)?,
    };
    let command = command.replace("${containerWorkspaceFolder}", crate::backend::WORKSPACE);
    Ok((!command.trim().is_empty()).then_some(command))
}

pub(super) fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The recipe a devcontainer configuration at `config_path` (text `text`) gives.
pub(super) fn devcontainer_recipe(config_path: &str, text: &str) -> Result<Recipe> {
    let options = jsonc_parser::ParseOptions::default();
    let parsed: DevContainer = jsonc_parser::parse_to_serde_value(text, &options)
        .map_err(|err| Error::invalid(format!("{config_path} cannot be read: {err}")))?;
    if parsed
        .features
        .as_ref()
        .is_some_and(|features| features.as_object().is_none_or(|f| !f.is_empty()))
    {
        return Err(Error::invalid(format!(
            "{config_path}: \"features\" are not supported (they install from the network at build time); put what they install into the Dockerfile"
        )));
    }
    if parsed.docker_compose_file.is_some() {
        return Err(Error::invalid(format!(
            "{config_path}: \"dockerComposeFile\" is not supported; use \"image\" or \"build\""
        )));
    }
    let dir = config_path
        .rsplit_once('/')
        .map_or("", |(dir, _)| dir)
        .to_owned();
    let post = parsed
        .post_create_command
        .as_ref()
        .map(post_create_command)
        .transpose()?
        .flatten();
    let build = parsed.build.unwrap_or_default();
    let dockerfile = build.dockerfile.or(parsed.docker_file);
    let mut recipe = Recipe {
        image: None,
        context: String::new(),
        dockerfile: String::new(),
        dockerfile_in_repo: String::new(),
        build_args: build.args,
        container_env: parsed.container_env,
        post_create_command: post,
        config: text.to_owned(),
    };
    match (dockerfile, parsed.image) {
        (Some(dockerfile), _) => {
            let context = build
                .context
                .or(parsed.context)
                .unwrap_or_else(|| ".".to_owned());
            let outside = || {
                Error::invalid(format!(
                    "{config_path}: the build's context and Dockerfile must be inside the repository"
                ))
            };
            recipe.context = repo_path(&join(&dir, &context)).ok_or_else(outside)?;
            recipe.dockerfile_in_repo = repo_path(&join(&dir, &dockerfile)).ok_or_else(outside)?;
            recipe.dockerfile = relative_to(&recipe.dockerfile_in_repo, &recipe.context)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "{config_path}: the Dockerfile {:?} must be inside the build context {:?}",
                        recipe.dockerfile_in_repo, recipe.context
                    ))
                })?;
        }
        (None, Some(image)) => recipe.image = Some(image),
        (None, None) => {
            return Err(Error::invalid(format!(
                "{config_path} names neither \"image\" nor \"build.dockerfile\""
            )));
        }
    }
    Ok(recipe)
}

/// `path` relative to directory `dir` (both normalized), when inside it.
pub(super) fn relative_to(path: &str, dir: &str) -> Option<String> {
    if dir.is_empty() {
        return Some(path.to_owned());
    }
    path.strip_prefix(dir)?
        .strip_prefix('/')
        .map(str::to_owned)
        .filter(|rest| !rest.is_empty())
}
