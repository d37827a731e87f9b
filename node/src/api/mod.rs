//! The HTTP API (`/api/v1`), operations endpoints and the router.

pub mod auth;
pub mod error;
pub mod extract;
pub mod incoming_body;
pub mod ops;
pub mod reserve;
pub mod rooms;
pub mod unsent_answer;
pub mod users;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use tracing::Instrument;

use crate::metrics::inc;
use crate::state::AppState;
use crate::{gateway, web};

/// Wraps every request in a span and counts the answers.
async fn count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "http.request",
        method = %req.method(),
        path = %req.uri().path(),
        status = tracing::field::Empty,
    );
    let resp = next.run(req).instrument(span.clone()).await;
    span.record("status", resp.status().as_u16());
    inc(&state.metrics.http_requests);
    if resp.status().as_u16() >= 400 {
        inc(&state.metrics.http_errors);
    }
    resp
}

/// API answers hold tokens and private data: never stored by a cache
/// (RFC 6749 5.1 asks it of token answers) nor sniffed as another type.
async fn private_answers(req: Request, next: Next) -> Response {
    use axum::http::{header, HeaderValue};
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

async fn not_found() -> impl IntoResponse {
    error::ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> impl IntoResponse {
    error::ApiError::invalid("method not allowed on this endpoint")
}

/// Every route of a node.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/refresh", post(auth::refresh_tokens))
        .route("/auth/logout", post(auth::logout))
        .route("/users/me", get(users::me))
        .route("/users/{user_id}", get(users::profile))
        .route("/rooms", post(rooms::create).get(rooms::list))
        .route("/rooms/direct", post(rooms::direct))
        .route("/rooms/{room_id}", get(rooms::get).patch(rooms::update))
        .route("/rooms/{room_id}/members", post(rooms::add_member))
        .route(
            "/rooms/{room_id}/members/{user_id}",
            delete(rooms::remove_member),
        )
        .route(
            "/rooms/{room_id}/members/{user_id}/role",
            put(rooms::set_role),
        )
        .route("/rooms/{room_id}/messages", get(rooms::history))
        .route("/cluster", get(ops::cluster))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(private_answers));
    Router::new()
        .nest("/api/v1", api)
        .route("/ws", get(gateway::upgrade))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/", get(web::index))
        .route("/{file}", get(web::asset))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}
