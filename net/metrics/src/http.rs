//! `/metrics`, `/livez` and `/readyz` over axum.
//!
//! * `GET /metrics`: the registry's exposition (200, [`CONTENT_TYPE`]).
//! * `GET /livez`, `GET /readyz`: 200 `ok`, or 503 with the reasons, one
//!   short line.
//!
//! Each answer is computed on the blocking pool: a source may take a lock
//! its role holds briefly, and readiness may read the database.

use std::net::SocketAddr;
use tracing::Instrument as _;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{CONTENT_TYPE, Check, Registry};

/// The three routes, for a role to merge into its own router or to
/// [`spawn`] on their own.
pub fn router(registry: Registry) -> Router {
    let (m, l, r) = (registry.clone(), registry.clone(), registry);
    Router::new()
        .route("/metrics", get(move || metrics(m.clone())))
        .route("/livez", get(move || probe(l.clone(), Registry::live)))
        .route("/readyz", get(move || probe(r.clone(), Registry::ready)))
}

async fn metrics(registry: Registry) -> Response {
    match tokio::task::spawn_blocking({
        let span = tracing::Span::current();
        let f = move || registry.render();
        move || span.in_scope(f)
    })
    .await
    {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn probe(registry: Registry, check: fn(&Registry) -> Check) -> Response {
    let answer = tokio::task::spawn_blocking({
        let span = tracing::Span::current();
        let f = move || check(&registry);
        move || span.in_scope(f)
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match answer {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

/// Binds `addr` (`host:port`; port 0 picks a free one).
pub async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves [`router`] on `listener` until `stop`.
pub fn spawn(listener: TcpListener, registry: Registry, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(
        (async move {
            if let Err(e) = axum::serve(listener, router(registry))
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::warn!(error = %e, "metrics server stopped");
            }
        })
        .in_current_span(),
    )
}
