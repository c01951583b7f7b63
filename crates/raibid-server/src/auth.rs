//! Bearer-token access to the jobs API.
//!
//! Handlers take [`CanRunJobs`], [`CanSetSecrets`], [`CanHoldPools`] or [`CanRead`] as an
//! argument; the extractor runs before the body is read, so an unauthenticated client cannot
//! make the server parse its payload. The token itself is never logged: it lives only in the
//! request's header map and in the comparison.
//!
//! A browser signed in on the web pages sends a session cookie ([`SESSION_COOKIE`]): a random
//! id whose hash names, in Redis, the token it signed in with. Reads accept it, so a job's
//! page, its log stream and its status work under `server.read_requires_token`; the API's
//! changes do not, so no other site can make a signed-in browser change anything through them
//! (the pages' own buttons check where the form came from, see `pages::session`).

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use raibid_config::{ApiToken, TokenScope};

use crate::{ApiError, AppState, auth_limit};

/// The token a request presented, and so what it may change.
pub(crate) struct Caller(ApiToken);

impl Caller {
    /// How the server's log names it: the token's name, or the start of its hash.
    pub(crate) fn name(&self) -> String {
        self.0.name()
    }

    /// What tells this token's `Idempotency-Key`s from another's: the start of its hash (no
    /// secret: the configuration holds it), which does not change when its entry is renamed.
    pub(crate) fn key_scope(&self) -> String {
        let hash = self.0.hash.to_string();
        let hex = hash.rsplit(':').next().unwrap_or(&hash);
        hex[..hex.len().min(16)].to_owned()
    }

    /// Refuses (403) a change to a repository the token is not for (`repos:` of its entry).
    pub(crate) fn may_change(&self, repo: &str) -> Result<(), ApiError> {
        if self.0.covers(repo) {
            Ok(())
        } else {
            Err(self.not_for(repo))
        }
    }

    /// Refuses (403) a change to an owner's secrets, which every repository of the owner
    /// reads, unless the token is for every one of them: `repos:` holds `*` or `<owner>/*`.
    pub(crate) fn may_change_owner(&self, owner: &str) -> Result<(), ApiError> {
        if self.0.covers_owner(owner) {
            Ok(())
        } else {
            Err(self.not_for(&format!("every repository of {owner} (`{owner}/*`)")))
        }
    }

    /// Refuses (403) a change that holds every repository's jobs (pausing a pool) unless the
    /// token is for every repository: a token limited to some may not stop the others.
    pub(crate) fn may_change_all(&self, what: &str) -> Result<(), ApiError> {
        if self.0.covers_all() {
            Ok(())
        } else {
            Err(self.not_for(&format!(
                "{what}, which holds every repository's jobs (`*`)"
            )))
        }
    }

    fn not_for(&self, what: &str) -> ApiError {
        ApiError::Forbidden(format!(
            "token {} may not change {what}: its repos are {}",
            self.name(),
            self.0.repos.join(", ")
        ))
    }
}

/// Proof that the request may change jobs (submit, cancel, retry, approve, run a schedule):
/// a token with the `jobs` scope. The handler still checks the job's repository with
/// [`Caller::may_change`].
pub(crate) struct CanRunJobs(pub(crate) Caller);

/// Proof that the request may set, list and delete secrets: a token with the `secrets` scope.
/// The handler still checks the repository or owner.
pub(crate) struct CanSetSecrets(pub(crate) Caller);

/// Proof that the request may pause and resume pools: a token with the `pools` scope. The
/// handler still checks that it is for every repository ([`Caller::may_change_all`]).
pub(crate) struct CanHoldPools(pub(crate) Caller);

/// Proof that the request may read, and of which repositories. Free unless
/// `server.read_requires_token`; then any valid token reads (every scope includes reading),
/// but only the jobs, logs and artifacts of its `repos:`, as a Gitea or GitLab token sees only
/// the projects its user may see. Queues and agents are the farm's, not a repository's, and
/// show every token the same.
pub(crate) struct CanRead {
    /// The token when it limits what is read (its `repos:`); `None`: everything.
    limited_to: Option<ApiToken>,
    /// The position in `server.tokens` of the token the read was checked with, if one was.
    checked: Option<usize>,
}

impl CanRead {
    /// Whether the jobs of `repo` (`owner/name`) are the caller's to read.
    pub(crate) fn may_read(&self, repo: &str) -> bool {
        self.limited_to
            .as_ref()
            .is_none_or(|token| token.covers(repo))
    }

    /// Which configured token the caller is, when reading needed one: what [`token_index`]
    /// would find again (a session's costs a Redis lookup).
    pub(crate) fn checked_token(&self) -> Option<usize> {
        self.checked
    }

    /// Refuses (403) a read of a repository the caller named and may not read.
    pub(crate) fn check(&self, repo: &str) -> Result<(), ApiError> {
        match &self.limited_to {
            Some(token) if !token.covers(repo) => Err(ApiError::Forbidden(format!(
                "token {} may not read {repo}: its repos are {}",
                token.name(),
                token.repos.join(", ")
            ))),
            _ => Ok(()),
        }
    }
}

impl FromRequestParts<AppState> for CanRunJobs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        scoped(parts, state, TokenScope::Jobs).map(CanRunJobs)
    }
}

impl FromRequestParts<AppState> for CanSetSecrets {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        scoped(parts, state, TokenScope::Secrets).map(CanSetSecrets)
    }
}

impl FromRequestParts<AppState> for CanHoldPools {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        scoped(parts, state, TokenScope::Pools).map(CanHoldPools)
    }
}

impl FromRequestParts<AppState> for CanRead {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if !state.config().server.read_requires_token {
            return Ok(CanRead {
                limited_to: None,
                checked: None,
            });
        }
        let token = if parts.headers.contains_key(AUTHORIZATION) {
            check_token(parts, state)?
        } else if session_cookie(&parts.headers).is_some() {
            session_of(parts, state).await?.ok_or_else(|| {
                ApiError::Unauthorized(
                    "this browser's sign-in has ended (it expired or signed out, or its token \
                     is no longer one of server.tokens): sign in again"
                        .into(),
                )
            })?
        } else if state.config().server.tokens.is_empty() {
            check_token(parts, state)?
        } else {
            return Err(ApiError::Unauthorized(
                "this server's jobs are read with an API token (server.read_requires_token): \
                 send `Authorization: Bearer <token>`, or sign in on its web pages"
                    .into(),
            ));
        };
        let checked = position_of_hash(&state.config().server.tokens, &token.hash.to_string());
        Ok(CanRead {
            limited_to: (!token.covers_all()).then_some(token),
            checked,
        })
    }
}

fn scoped(parts: &Parts, state: &AppState, scope: TokenScope) -> Result<Caller, ApiError> {
    require(check_token(parts, state)?, scope)
}

/// The token as a [`Caller`] if it has `scope`; else 403 naming what it lacks.
pub(crate) fn require(token: ApiToken, scope: TokenScope) -> Result<Caller, ApiError> {
    if token.has_scope(scope) {
        Ok(Caller(token))
    } else {
        Err(ApiError::Forbidden(format!(
            "token {} may not do this: it needs the `{}` scope (its scopes: {})",
            token.name(),
            scope.as_str(),
            token
                .scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

fn check_token(parts: &Parts, state: &AppState) -> Result<ApiToken, ApiError> {
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
    let client = auth_limit::client_of(parts, state);
    auth_limit::check(state, client)?;
    match matching(accepted, presented) {
        Some(i) => Ok(accepted[i].clone()),
        None => {
            auth_limit::record(state, client);
            Err(ApiError::Unauthorized("invalid token".into()))
        }
    }
}

/// The position of the first entry whose hash is the presented token's. Every configured hash
/// is compared, without stopping at the first match, so the time taken does not tell which
/// entry (if any) was close.
fn matching(accepted: &[ApiToken], presented: &str) -> Option<usize> {
    accepted.iter().enumerate().fold(None, |found, (i, token)| {
        if token.hash.matches(presented) {
            found.or(Some(i))
        } else {
            found
        }
    })
}

/// Which configured token (by position in `server.tokens`) the request presents, in its
/// header or a signed-in browser's cookie, if any: the identity of a client that may hold
/// several connections (log follows are limited per client). An invalid token identifies
/// nobody, or made-up tokens would be fresh identities.
pub(crate) async fn token_index(headers: &HeaderMap, state: &AppState) -> Option<usize> {
    let accepted = &state.config().server.tokens;
    match headers.get(AUTHORIZATION) {
        Some(value) => matching(accepted, value.to_str().ok().and_then(bearer)?),
        None => session_position(state, &session_cookie(headers)?)
            .await
            .ok()?,
    }
}

/// The cookie of a browser signed in on the web pages: its session's id.
pub(crate) const SESSION_COOKIE: &str = "raibid_session";

/// The value of the request's [`SESSION_COOKIE`] (percent-decoded), whether or not it names
/// a session.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| {
            form_urlencoded::parse(format!("t={value}").as_bytes())
                .map(|(_, v)| v.into_owned())
                .next()
                .unwrap_or_default()
        })
        .filter(|token| !token.is_empty())
}

/// The entry of `server.tokens` that `presented` is, if any (every entry compared, as for a
/// bearer token): what signing in checks.
pub(crate) fn token_entry(state: &AppState, presented: &str) -> Option<ApiToken> {
    let accepted = &state.config().server.tokens;
    matching(accepted, presented).map(|i| accepted[i].clone())
}

/// Where Redis keeps the session of cookie `id`: a hash of it, so that Redis's data holds no
/// cookie a browser could present.
pub(crate) fn session_key(id: &str) -> String {
    let hash = raibid_config::hash_token(id);
    hash.strip_prefix("sha256:").unwrap_or(&hash).to_owned()
}

/// The token the session of cookie `id` is signed in as, if the session lasts and the token
/// is still one of `server.tokens`.
pub(crate) async fn session_token(
    state: &AppState,
    id: &str,
) -> Result<Option<ApiToken>, ApiError> {
    let accepted = &state.config().server.tokens;
    Ok(session_position(state, id)
        .await?
        .map(|i| accepted[i].clone()))
}

/// Where in `server.tokens` the token of the session of cookie `id` is, if the session lasts
/// and the token is still there.
async fn session_position(state: &AppState, id: &str) -> Result<Option<usize>, ApiError> {
    let Some(hash) = state.queue().session(&session_key(id)).await? else {
        return Ok(None);
    };
    Ok(position_of_hash(&state.config().server.tokens, &hash))
}

/// The token the request's session cookie is signed in as ([`session_token`]), looked up once
/// per request: a page asks both [`crate::pages::Viewer`] and [`CanRead`], which share the
/// answer through the request's extensions.
pub(crate) async fn session_of(
    parts: &mut Parts,
    state: &AppState,
) -> Result<Option<ApiToken>, ApiError> {
    #[derive(Clone)]
    struct Looked(Option<ApiToken>);
    if let Some(Looked(token)) = parts.extensions.get::<Looked>() {
        return Ok(token.clone());
    }
    let token = match session_cookie(&parts.headers) {
        Some(id) => session_token(state, &id).await?,
        None => None,
    };
    parts.extensions.insert(Looked(token.clone()));
    Ok(token)
}

/// The entry of `accepted` whose hash is `hash` (`sha256:<hex>`), as a session names it.
fn position_of_hash(accepted: &[ApiToken], hash: &str) -> Option<usize> {
    accepted
        .iter()
        .position(|token| token.hash.to_string() == hash)
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

    #[test]
    fn session_cookies() {
        let cookies = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(COOKIE, value.parse().unwrap());
            }
            session_cookie(&headers)
        };
        assert_eq!(cookies(&["raibid_session=abc"]).as_deref(), Some("abc"));
        assert_eq!(
            cookies(&["theme=dark; raibid_session=a%3Bb%20c; x=y"]).as_deref(),
            Some("a;b c")
        );
        assert_eq!(
            cookies(&["theme=dark", "raibid_session=abc"]).as_deref(),
            Some("abc")
        );
        assert_eq!(cookies(&["raibid_sessions=abc"]), None);
        assert_eq!(cookies(&["raibid_session="]), None);
        assert_eq!(cookies(&[]), None);
    }
}
