//! Operations endpoints: `/health`, `/ready`, `/metrics`.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::metrics::Arriving;
use crate::state::AppState;

/// `GET /health`: 200 while the process runs.
pub async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// `GET /ready`: 200 when storage answers, the node has joined its
/// cluster, and it is not draining; 503 otherwise.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    if state.draining.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        );
    }
    let view = state.system.cluster().view();
    if !view.joined {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "joining cluster"})),
        );
    }
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(
                json!({"status": "ready", "node": &*state.node_name, "members": view.members.len()}),
            ),
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

/// `GET /api/v1/cluster`: members as this node sees them (no auth: operators' view).
pub async fn cluster(State(state): State<AppState>) -> impl IntoResponse {
    let view = state.system.cluster().view();
    let members = state.system.cluster().status().await;
    Json(json!({
        "node": &*state.node_name,
        "joined": view.joined,
        "members": members,
        "live": view.members.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        "owners": view.owners.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
    }))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let stats = state.system.stats().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(
            stats,
            state.system.cluster().view().members.len(),
            Arriving {
                bodies: state.bodies.held(),
                messages: state.message_rules.budget.held(),
            },
            &state.node_name,
        ),
    )
}
