//! The coordinator's HTTP admin API (axum): `GET /v1/status`.

use std::sync::{Arc, Mutex};

use axum::{Json, Router, extract::State, routing::get};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::core::Core;
use super::lock;
use crate::cluster::ClusterStatus;

/// Serves the admin API until `stop`.
pub(super) async fn serve(listener: TcpListener, core: Arc<Mutex<Core>>, stop: CancellationToken) {
    let app = Router::new()
        .route("/v1/status", get(status))
        .with_state(core);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        warn!(error = %e, "HTTP API stopped");
    }
}

async fn status(State(core): State<Arc<Mutex<Core>>>) -> Json<ClusterStatus> {
    Json(lock(&core).status())
}
