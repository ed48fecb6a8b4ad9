//! `/openapi.json`, generated from the handlers, and Swagger UI at `/docs`, served
//! from assets compiled into the binary (no CDN, works offline).

use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use super::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "repobox", description = "Git repositories as locked-down Docker sandboxes, over HTTP."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(crate::error::ErrorBody)),
    tags(
        (name = "containers", description = "Sandboxes: create, list, status, destroy"),
        (name = "commands", description = "Running commands in a sandbox"),
        (name = "files", description = "Browsing, reading and writing a sandbox's files"),
        (name = "repository", description = "What changed in the checkout, as a patch, and a reset to it"),
        (name = "snapshots", description = "Snapshots of sandboxes, and forks: many copies of one"),
        (name = "processes", description = "Background processes that outlive requests and restarts"),
        (name = "ports", description = "Servers inside a sandbox reached through it: preview URLs, listening ports, raw TCP"),
        (name = "sessions", description = "Shells whose state carries from one command to the next"),
        (name = "images", description = "Images built from a repository's own Dockerfile or devcontainer"),
        (name = "health", description = "Health, readiness and service information"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document the routes are added to.
pub(super) fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Swagger UI at `/docs` and the document at `/openapi.json`.
pub(super) fn router(openapi: utoipa::openapi::OpenApi) -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
}

/// Fills in what every route can answer beside its own results, so that a generated
/// client knows every status code: 401 where keys may be required, 404/409/503 for
/// routes on a sandbox, 400/413/415 for routes with a body, 400 for routes with a
/// query.
pub(super) fn complete(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{HttpMethod, ParameterIn};

    for (path, item) in &mut openapi.paths.paths {
        let on_sandbox = path.contains("{container_id}");
        for method in [
            HttpMethod::Get,
            HttpMethod::Post,
            HttpMethod::Put,
            HttpMethod::Delete,
            HttpMethod::Patch,
        ] {
            let operation = match method {
                HttpMethod::Get => item.get.as_mut(),
                HttpMethod::Post => item.post.as_mut(),
                HttpMethod::Put => item.put.as_mut(),
                HttpMethod::Delete => item.delete.as_mut(),
                HttpMethod::Patch => item.patch.as_mut(),
                _ => None,
            };
            let Some(operation) = operation else {
                continue;
            };
            let public = operation
                .security
                .as_ref()
                .is_some_and(|requirements| requirements.iter().all(is_empty_requirement));
            let mut add = |status: &str, description: &str| {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| error_response(description));
            };
            if !public {
                add("401", "Missing or wrong API key (when API_KEYS is set)");
            }
            if on_sandbox {
                add("404", "Unknown container");
                add("503", "The engine is unreachable");
                if !(matches!(method, HttpMethod::Delete)
                    || (matches!(method, HttpMethod::Get) && path.ends_with("{container_id}")))
                {
                    add("409", "The sandbox is not running");
                }
            }
            if crate::backend::image_store_route(path).is_some() {
                add(
                    "501",
                    "Not supported by this backend (it has no image store)",
                );
            }
            if let Some(body) = &operation.request_body {
                add("400", "Invalid request body");
                add("413", "Body above its limit");
                if body.content.contains_key("application/json") {
                    add("415", "Not a JSON body (Content-Type: application/json)");
                }
            }
            let has_query = operation
                .parameters
                .iter()
                .flatten()
                .any(|parameter| matches!(parameter.parameter_in, ParameterIn::Query));
            if has_query {
                add("400", "Invalid query");
            }
        }
    }
}

/// The routes that create something, the status of their answer, and the field of
/// that answer (and path parameter of later routes) that names what they made.
const CREATIONS: [(&str, &str, &str); 7] = [
    ("/api/v1/containers", "201", "container_id"),
    (
        "/api/v1/containers/{container_id}/processes",
        "201",
        "process_id",
    ),
    (
        "/api/v1/containers/{container_id}/sessions",
        "201",
        "session_id",
    ),
    (
        "/api/v1/containers/{container_id}/snapshots",
        "201",
        "snapshot_id",
    ),
    (
        "/api/v1/containers/{container_id}/fork",
        "201",
        "snapshot_id",
    ),
    ("/api/v1/jobs", "202", "job_id"),
    ("/api/v1/images", "202", "image_id"),
];

/// OpenAPI links from each creation's answer to every route that takes the id it
/// made (its other path parameters from the creation's own path), so that a client
/// generator, or a stateful tester such as schemathesis, knows where an id goes.
///
/// Last of the document's steps: utoipa 5.5 writes a link's `operation_id` under
/// that name rather than OpenAPI's `operationId`, so the id goes in through the
/// link's extensions (written as given), which [`configure`]'s round trip through
/// JSON would drop.
pub(super) fn link_creations(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::link::LinkBuilder;

    let targets: Vec<(String, String)> = openapi
        .paths
        .paths
        .iter()
        .flat_map(|(path, item)| {
            [&item.get, &item.put, &item.post, &item.delete, &item.patch]
                .into_iter()
                .flatten()
                .filter_map(|operation| operation.operation_id.clone())
                .map(|id| (path.clone(), id))
        })
        .collect();
    for (creator, status, id) in CREATIONS {
        let Some(RefOr::T(response)) = openapi
            .paths
            .paths
            .get_mut(creator)
            .and_then(|item| item.post.as_mut())
            .and_then(|operation| operation.responses.responses.get_mut(status))
        else {
            continue;
        };
        for (path, operation_id) in &targets {
            let parameters = path_parameters(path);
            if !parameters.contains(&id) {
                continue;
            }
            let name: utoipa::openapi::extensions::Extensions =
                [("operationId", operation_id.clone())]
                    .into_iter()
                    .collect();
            let mut link = LinkBuilder::new().extensions(Some(name));
            let mut complete = true;
            for parameter in parameters {
                if parameter == id {
                    link = link.parameter(parameter, format!("$response.body#/{id}"));
                } else if creator.contains(&format!("{{{parameter}}}")) {
                    link = link.parameter(parameter, format!("$request.path.{parameter}"));
                } else {
                    complete = false;
                }
            }
            if complete {
                response
                    .links
                    .insert(operation_id.clone(), RefOr::T(link.build()));
            }
        }
    }
}

/// The names of a path template's parameters (`{container_id}` gives `container_id`).
fn path_parameters(template: &str) -> Vec<&str> {
    template
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

fn is_empty_requirement(requirement: &utoipa::openapi::security::SecurityRequirement) -> bool {
    serde_json::to_value(requirement)
        .ok()
        .and_then(|value| value.as_object().map(serde_json::Map::is_empty))
        .unwrap_or(false)
}

fn error_response(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

/// Makes the document match the running server: the bounds of fields whose limits are
/// settings, and security only where keys are configured (without keys, no route
/// asks for one).
pub(super) fn configure(openapi: &mut utoipa::openapi::OpenApi, config: &crate::config::Config) {
    let mut bounds = serde_json::to_value(&*openapi).unwrap_or_default();
    let mut bound = |schema: &str, field: &str, minimum: f64, maximum: f64, exclusive_min: bool| {
        let Some(property) = bounds
            .pointer_mut(&format!("/components/schemas/{schema}/properties/{field}"))
            .and_then(serde_json::Value::as_object_mut)
        else {
            return;
        };
        if exclusive_min {
            property.insert("exclusiveMinimum".into(), minimum.into());
        } else {
            property.insert("minimum".into(), minimum.into());
        }
        property.insert("maximum".into(), maximum.into());
    };
    let max = |value: u64| value as f64;
    bound(
        "CreateContainerRequest",
        "max_runtime_secs",
        1.0,
        max(config.max_runtime_secs),
        false,
    );
    bound(
        "ExecuteCommandRequest",
        "timeout_secs",
        1.0,
        max(config.max_exec_timeout_secs),
        false,
    );
    bound(
        "UpdateContainerRequest",
        "max_runtime_secs",
        1.0,
        max(config.max_runtime_secs),
        false,
    );
    bound(
        "JobRequest",
        "timeout_secs",
        1.0,
        max(config.max_exec_timeout_secs),
        false,
    );
    bound(
        "JobRequest",
        "concurrency",
        1.0,
        config.max_job_concurrency as f64,
        false,
    );
    bound("ResourcesRequest", "cpus", 0.0, config.max_cpus, true);
    bound(
        "ResourcesRequest",
        "disk_mb",
        1.0,
        max(config.max_disk_mb),
        false,
    );
    bound(
        "ResourcesRequest",
        "memory_mb",
        6.0,
        max(config.max_memory_mb),
        false,
    );
    bound(
        "ResourcesRequest",
        "pids",
        16.0,
        config.max_pids as f64,
        false,
    );
    bound("ForkRequest", "count", 1.0, config.max_forks as f64, false);
    bound(
        "ForkRequest",
        "max_runtime_secs",
        1.0,
        max(config.max_runtime_secs),
        false,
    );
    bound(
        "StartProcessRequest",
        "timeout_secs",
        1.0,
        max(config.max_exec_timeout_secs),
        false,
    );
    constrain_strings(&mut bounds);
    if let Some(repos) = bounds
        .pointer_mut("/components/schemas/JobRequest/properties/repos")
        .and_then(serde_json::Value::as_object_mut)
    {
        repos.insert("minItems".into(), 1.into());
        repos.insert("maxItems".into(), config.max_job_repos.into());
    }
    if config.api_keys.is_empty() {
        if let Some(object) = bounds.as_object_mut() {
            object.remove("security");
        }
        if let Some(paths) = bounds
            .get_mut("paths")
            .and_then(serde_json::Value::as_object_mut)
        {
            for item in paths
                .values_mut()
                .filter_map(serde_json::Value::as_object_mut)
            {
                for operation in item
                    .values_mut()
                    .filter_map(serde_json::Value::as_object_mut)
                {
                    operation.remove("security");
                    if let Some(responses) = operation
                        .get_mut("responses")
                        .and_then(serde_json::Value::as_object_mut)
                    {
                        responses.remove("401");
                    }
                }
            }
        }
    }
    if let Ok(configured) = serde_json::from_value(bounds) {
        *openapi = configured;
    }
}

/// A command: something other than white space, and no NUL byte.
const COMMAND: &str = r"^[^\x00]*[^\s\x00][^\x00]*$";
/// An absolute path without NUL bytes.
const ABSOLUTE_PATH: &str = r"^/[^\x00]*$";
/// A repository's URL (the host must also be in `ALLOWED_GIT_HOSTS`, which the
/// document cannot say).
const REPO_URL: &str = r"^https?://[^/?#\s]+";
/// A revision (`git/diff`'s `base`): no leading `-`, no `..`, `:`, `\`, white space
/// or control characters; at most 255 bytes, which 63 characters never pass.
const REVISION: &str = r"^(?!-)(?!.*\.\.)[^\s:\\\x00-\x1f\x7f-\x9f]{1,63}$";
/// A commit SHA (7 to 64 hex digits); empty means "not given".
const COMMIT: &str = "^(?:[0-9A-Fa-f]{7,64})?$";
/// A name of an environment variable (or build argument).
const VARIABLE_NAME: &str = "^[A-Za-z_][A-Za-z0-9_]*$";
/// A value without NUL bytes.
const NO_NUL: &str = r"^[^\x00]*$";
/// Canonical standard base64 (padded, no stray bits in the last group), what the
/// server decodes.
const BASE64: &str =
    "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";
/// Variables one map may hold (`request::validate_env`).
const MAX_VARIABLES: u64 = 256;

/// States in the document the checks the server makes of request strings, so that a
/// client (or a generator of test requests) is not told that a value the server
/// refuses is valid: commands, paths, URLs, commits, names of variables.
fn constrain_strings(document: &mut serde_json::Value) {
    let mut set = |schema: &str, field: &str, keyword: &str, value: serde_json::Value| {
        if let Some(property) = document
            .pointer_mut(&format!("/components/schemas/{schema}/properties/{field}"))
            .and_then(serde_json::Value::as_object_mut)
        {
            property.insert(keyword.to_owned(), value);
        }
    };
    for (schema, field) in [
        ("ExecuteCommandRequest", "command"),
        ("StartProcessRequest", "command"),
        ("JobRequest", "command"),
        ("CreateContainerRequest", "initial_command"),
        ("JobRequest", "initial_command"),
    ] {
        set(schema, field, "pattern", COMMAND.into());
    }
    for schema in [
        "ExecuteCommandRequest",
        "StartProcessRequest",
        "CreateSessionRequest",
    ] {
        set(schema, "working_directory", "pattern", ABSOLUTE_PATH.into());
    }
    for schema in ["CreateContainerRequest", "CreateImageRequest", "JobRepo"] {
        set(schema, "repo_url", "pattern", REPO_URL.into());
        set(schema, "commit", "pattern", COMMIT.into());
    }
    set("StdinRequest", "data_base64", "pattern", BASE64.into());
    set(
        "StdinRequest",
        "data_base64",
        "contentEncoding",
        "base64".into(),
    );
    set("CreateSnapshotRequest", "name", "minLength", 1.into());
    set("CreateSnapshotRequest", "name", "maxLength", 200.into());
    set(
        "CreateSnapshotRequest",
        "name",
        "pattern",
        r"^[^\x00-\x1f\x7f-\x9f]*$".into(),
    );
    for (schema, field) in [
        ("CreateContainerRequest", "environment_vars"),
        ("ExecuteCommandRequest", "environment"),
        ("StartProcessRequest", "environment"),
        ("CreateSessionRequest", "environment"),
        ("ForkRequest", "environment_vars"),
        ("JobRequest", "environment_vars"),
        ("CreateImageRequest", "build_args"),
    ] {
        set(
            schema,
            field,
            "propertyNames",
            serde_json::json!({"type": "string", "pattern": VARIABLE_NAME}),
        );
        set(
            schema,
            field,
            "additionalProperties",
            serde_json::json!({"type": "string", "pattern": NO_NUL}),
        );
        set(schema, field, "maxProperties", MAX_VARIABLES.into());
    }
    // Paths in queries (`path`, `file_path`): absolute; `base`: a revision.
    let Some(paths) = document
        .get_mut("paths")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return;
    };
    for parameter in paths
        .values_mut()
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("parameters"))
        .filter_map(serde_json::Value::as_array_mut)
        .flatten()
    {
        let pattern = match parameter["name"].as_str() {
            _ if parameter["in"] != "query" => continue,
            Some("path" | "file_path") => ABSOLUTE_PATH,
            Some("base") => REVISION,
            _ => continue,
        };
        if let Some(schema) = parameter
            .get_mut("schema")
            .and_then(serde_json::Value::as_object_mut)
        {
            schema.insert("pattern".to_owned(), pattern.into());
        }
    }
}
