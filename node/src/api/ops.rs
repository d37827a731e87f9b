//! Operations endpoints: `/health`, `/ready`, `/metrics`.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::state::AppState;

/// `GET /health`: 200 while the process runs.
pub async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// `GET /ready`: 200 when storage answers and the node is not draining.
///
/// (A single node has no cluster to join; with clustering this also waits
/// for the node to join its cluster.)
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    if state.draining.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        );
    }
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "node": &*state.node_name})),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: storage does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "storage unavailable"})),
            )
        }
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let stats = state.system.stats().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(stats, &state.node_name),
    )
}
