//! Files: browse, read, write and transfer.

use utoipa_axum::router::OpenApiRouter;

use super::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
