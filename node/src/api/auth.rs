//! `/auth/*`: register, login, refresh, logout.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use parley_protocol::http::{Credentials, RefreshRequest, TokenResponse, UserInfo};
use parley_protocol::ids::new_id;
use parley_protocol::time::now_millis;
use parley_protocol::{validate, ErrorCode};
use parley_storage::{RefreshTokenRecord, StorageError, UserRecord};

use super::error::{ApiError, ApiResult};
use super::extract::{is_json, parse_object, Body, RawBody, NOT_JSON};
use crate::auth::extract::AuthUser;
use crate::auth::password::HashError;
use crate::auth::refresh;
use crate::client_ip::ClientIp;
use crate::metrics::inc;
use crate::state::AppState;

/// Same answer for an unknown user and a wrong password.
const BAD_LOGIN: &str = "invalid username or password";

fn limited(state: &AppState, result: Result<(), u64>) -> ApiResult<()> {
    result.map_err(|secs| {
        inc(&state.metrics.auth_rate_limited);
        ApiError::rate_limited(secs)
    })
}

/// `POST /auth/register`.
pub async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Body(req): Body<Credentials>,
) -> ApiResult<(StatusCode, Json<UserInfo>)> {
    limited(&state, state.limits.register_ip.check(&ip.to_string()))?;
    let username = validate::username(&req.username).map_err(|e| ApiError::invalid(e.0))?;
    validate::password(&req.password).map_err(|e| ApiError::invalid(e.0))?;
    if state.store.user_by_name(&username).await?.is_some() {
        return Err(ApiError::new(ErrorCode::Conflict, "username is taken"));
    }
    let password_hash = state.passwords.hash(req.password).await?;
    let user = UserRecord {
        user_id: new_id(),
        username: username.clone(),
        password_hash,
        created_at: now_millis(),
        last_seen: None,
    };
    match state.store.create_user(&user).await {
        Ok(()) => {}
        Err(StorageError::AlreadyExists) => {
            return Err(ApiError::new(ErrorCode::Conflict, "username is taken"))
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(user = %user.user_id, "user registered");
    Ok((
        StatusCode::CREATED,
        Json(UserInfo {
            user_id: user.user_id,
            username,
        }),
    ))
}

async fn issue(state: &AppState, user_id: &str, username: &str) -> ApiResult<TokenResponse> {
    let access_token = state
        .tokens
        .issue(user_id, username)
        .map_err(ApiError::internal)?;
    let refresh_token = refresh::new_token();
    let ttl_ms = (state.config.refresh_token_ttl_secs as i64).saturating_mul(1000);
    state
        .store
        .put_refresh_token(&RefreshTokenRecord {
            token_hash: refresh::hash(&refresh_token),
            user_id: user_id.to_string(),
            expires_at: now_millis().saturating_add(ttl_ms),
        })
        .await?;
    Ok(TokenResponse {
        access_token,
        refresh_token,
        expires_in: state.tokens.ttl_secs,
        user: UserInfo {
            user_id: user_id.to_string(),
            username: username.to_string(),
        },
    })
}

/// `POST /auth/login`.
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Body(req): Body<Credentials>,
) -> ApiResult<Json<TokenResponse>> {
    limited(&state, state.limits.login_ip.check(&ip.to_string()))?;
    // Malformed names cannot exist; answer like any unknown user.
    let Ok(username) = validate::username(&req.username) else {
        inc(&state.metrics.login_failures);
        return Err(ApiError::unauthorized(BAD_LOGIN));
    };
    // Per user *and* address: keyed on the user alone, anyone could keep a
    // user from logging in by failing under their name; the per-address
    // limit above bounds how many users one address may try.
    limited(
        &state,
        state.limits.login_user.check(&format!("{username} {ip}")),
    )?;
    if req.password.chars().count() > validate::PASSWORD_MAX {
        inc(&state.metrics.login_failures);
        return Err(ApiError::unauthorized(BAD_LOGIN));
    }
    let user = state.store.user_by_name(&username).await?;
    let ok = match &user {
        Some(u) => {
            state
                .passwords
                .verify(req.password, u.password_hash.clone())
                .await?
        }
        None => {
            // Spend the same effort as a real check so timing reveals
            // nothing (and be as busy: a busy answer is the same for all).
            match state.passwords.hash(req.password).await {
                Err(HashError::Busy) => return Err(HashError::Busy.into()),
                _ => false,
            }
        }
    };
    match user {
        Some(u) if ok => {
            inc(&state.metrics.logins);
            Ok(Json(issue(&state, &u.user_id, &u.username).await?))
        }
        _ => {
            inc(&state.metrics.login_failures);
            Err(ApiError::unauthorized(BAD_LOGIN))
        }
    }
}

/// `POST /auth/refresh`: rotates the refresh token. Attempts are counted
/// per client IP, valid or not: each one costs a storage round trip.
pub async fn refresh_tokens(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Body(req): Body<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    limited(&state, state.limits.refresh_ip.check(&ip.to_string()))?;
    let token = req
        .refresh_token
        .ok_or_else(|| ApiError::invalid("missing refresh_token"))?;
    let record = state
        .store
        .take_refresh_token(&refresh::hash(&token))
        .await?
        .filter(|r| r.expires_at > now_millis())
        .ok_or_else(|| ApiError::unauthorized("invalid or expired refresh token"))?;
    let user = state
        .store
        .user_by_id(&record.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid or expired refresh token"))?;
    Ok(Json(issue(&state, &user.user_id, &user.username).await?))
}

/// `POST /auth/logout`: revokes the given refresh token.
pub async fn logout(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<StatusCode> {
    // The body is optional: empty means "just end this session". One that
    // is there follows the rules of every other body.
    let req: RefreshRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RefreshRequest::default()
    } else if !is_json(&headers) {
        return Err(ApiError::invalid(NOT_JSON));
    } else {
        parse_object(&body)?
    };
    if let Some(token) = req.refresh_token {
        let hash = refresh::hash(&token);
        if let Some(record) = state.store.take_refresh_token(&hash).await? {
            if record.user_id != user.user_id {
                // Someone else's token: put it back untouched.
                state.store.put_refresh_token(&record).await?;
            }
        }
    }
    Ok(StatusCode::NO_CONTENT)
}
