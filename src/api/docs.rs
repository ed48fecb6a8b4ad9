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
