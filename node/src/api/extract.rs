//! Extractors whose rejections speak the contract's JSON errors.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use hyper::body::Body as _;
use serde::de::DeserializeOwned;

use parley_protocol::ErrorCode;

use super::error::ApiError;
use super::incoming_body;
use crate::client_ip::ClientIp;
use crate::listener::BodyDeadline;
use crate::state::AppState;

/// Reads a body with `read`, within the request's [`BodyDeadline`] if it
/// has one: a body that trickles in is refused rather than holding the
/// connection for as long as the client likes.
async fn within_deadline<T>(
    req: Request,
    read: impl AsyncFnOnce(Request) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    match req.extensions().get::<BodyDeadline>().copied() {
        None => read(req).await,
        Some(BodyDeadline(limit)) => tokio::time::timeout(limit, read(req))
            .await
            .unwrap_or_else(|_| Err(ApiError::invalid("request body not received in time"))),
    }
}

/// A JSON body; bad JSON is `invalid_request`, an oversized body `too_large`.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let json = is_json(req.headers());
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        if !json {
            return Err(ApiError::invalid(NOT_JSON));
        }
        parse_object(&bytes).map(Body)
    }
}

/// The answer to a body sent without a JSON content type.
pub const NOT_JSON: &str = "Expected request with `Content-Type: application/json`";

/// Whether the request says its body is JSON (`application/json`, or an
/// `application/...+json` type), parameters such as the charset aside.
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a JSON body that must be one object: serde would also fill a
/// struct from an array of its fields in order, which the contract does
/// not allow.
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first.is_some_and(|b| *b != b'{') {
        return Err(ApiError::invalid("the request body must be a JSON object"));
    }
    axum::Json::<T>::from_bytes(bytes)
        .map(|axum::Json(v)| v)
        .map_err(|e: JsonRejection| ApiError::invalid(e.body_text()))
}

/// Raw body bytes; an oversized body is `too_large`, at once when its
/// `Content-Length` says so (nothing of it is read). The body's size is
/// reserved in the node's incoming-body budget before any of it is read
/// (see [`incoming_body`]).
pub struct RawBody(pub axum::body::Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let max = state.config.max_body_bytes;
        let hint = body.size_hint();
        if hint.lower() > max as u64 {
            return Err(too_large());
        }
        let ClientIp(ip) = ClientIp::from_request_parts(&mut parts, state).await?;
        let len = incoming_body::expected_len(&hint, max);
        let _reserved = incoming_body::reserve(state, ip, len).await?;
        let req = Request::from_parts(parts, body);
        within_deadline(req, async |req| {
            axum::body::Bytes::from_request(req, state)
                .await
                .map(RawBody)
                .map_err(|e| {
                    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        too_large()
                    } else {
                        ApiError::invalid(e.body_text())
                    }
                })
        })
        .await
    }
}

/// The answer to a body over `--max-body-bytes`.
fn too_large() -> ApiError {
    ApiError::new(ErrorCode::TooLarge, "request body too large")
}

/// A query string; bad values are `invalid_request`.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e: QueryRejection| ApiError::invalid(e.body_text()))
    }
}

/// Path parameters; bad values are `invalid_request`.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e: PathRejection| ApiError::invalid(e.body_text()))
    }
}
