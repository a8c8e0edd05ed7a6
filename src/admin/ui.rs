//! The console under `/ui` (see the module doc of [`super`]).

use std::sync::Arc;

use axum::Router;

use super::AdminState;

/// The console's routes.
pub(crate) fn routes(state: Arc<AdminState>) -> Router {
    Router::new().with_state(state)
}
