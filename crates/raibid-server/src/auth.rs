//! Bearer-token access to the jobs API.
//!
//! Handlers take [`CanWrite`] or [`CanRead`] as an argument; the extractor runs before the body
//! is read, so an unauthenticated client cannot make the server parse its payload. The token
//! itself is never logged: it lives only in the request's header map and in the comparison.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::{ApiError, AppState};

/// Proof that the request may change jobs (submit, cancel, retry).
pub(crate) struct CanWrite;

/// Proof that the request may read jobs; free unless `server.read_requires_token`.
pub(crate) struct CanRead;

impl FromRequestParts<AppState> for CanWrite {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        check_token(parts, state).map(|()| CanWrite)
    }
}

impl FromRequestParts<AppState> for CanRead {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if !state.config().server.read_requires_token {
            return Ok(CanRead);
        }
        check_token(parts, state).map(|()| CanRead)
    }
}

fn check_token(parts: &Parts, state: &AppState) -> Result<(), ApiError> {
    let accepted = &state.config().server.tokens;
    if accepted.is_empty() {
        return Err(ApiError::Unauthorized(
            "no API tokens are configured: add the hash of a token to server.tokens \
             (`raibid token hash`) to enable this call"
                .into(),
        ));
    }
    let presented = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer <token>".into()))?
        .to_str()
        .ok()
        .and_then(bearer)
        .ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
        })?;
    // Every configured hash is compared, without stopping at the first match, so the time
    // taken does not tell which entry (if any) was close.
    let matched = accepted
        .iter()
        .fold(false, |found, hash| hash.matches(presented) | found);
    if matched {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("invalid token".into()))
    }
}

/// Which configured token (by position in `server.tokens`) the request presents, if any: the
/// identity of a client that may hold several connections (log follows are limited per
/// client). An invalid token identifies nobody, or made-up tokens would be fresh identities.
pub(crate) fn token_index(headers: &axum::http::HeaderMap, state: &AppState) -> Option<usize> {
    let presented = headers.get(AUTHORIZATION)?.to_str().ok().and_then(bearer)?;
    // Every hash is compared, as in `check_token`.
    state
        .config()
        .server
        .tokens
        .iter()
        .enumerate()
        .fold(None, |found, (i, hash)| {
            if hash.matches(presented) {
                found.or(Some(i))
            } else {
                found
            }
        })
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearerabc"), None);
    }
}
