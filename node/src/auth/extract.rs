//! The authenticated caller of an HTTP request.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;

use crate::api::error::ApiError;
use crate::metrics::inc;
use crate::state::AppState;

/// The user a valid access token names, within their request rate
/// (`--api-rate-per-user`, else 429 `rate_limited`).
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// User id.
    pub user_id: String,
    /// Username.
    pub username: String,
}

/// The bearer token of `Authorization: Bearer <token>`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token =
            bearer(&parts.headers).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let claims = state
            .tokens
            .verify(token)
            .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))?;
        // Counted per user before any work: a flood of requests with one
        // valid token is refused here, whatever the endpoint.
        state.limits.api_user.check(&claims.sub).map_err(|secs| {
            inc(&state.metrics.api_rate_limited);
            ApiError::rate_limited(secs)
        })?;
        Ok(AuthUser {
            user_id: claims.sub,
            username: claims.name,
        })
    }
}
