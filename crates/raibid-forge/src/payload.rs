//! Decoding webhook bodies into typed payloads, with errors that name the JSON path at fault.
//!
//! Gitea copied GitHub's payload shapes, so the structs here serve all three forges. Only the
//! fields raibid-ci reads are declared; everything else is skipped. Strings that later become
//! paths, refs or URLs are checked while decoding, so a bad value is reported at its own path
//! (`pull_request.head.sha`) rather than as a vague failure afterwards.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::parse::ParseError;
use crate::validate;

/// Defines a `String` newtype that only deserializes when `$check` accepts it.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Deserialize)]
        #[serde(try_from = "String")]
        pub(crate) struct $name(pub(crate) String);

        impl TryFrom<String> for $name {
            type Error = &'static str;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                $check(&s).map(|()| Self(s))
            }
        }
    };
}

/// Implements `Deserialize` for structs that derive it with `#[serde(remote = "Self")]`, so
/// that they accept a JSON object and nothing else.
///
/// serde's derived impls also accept a JSON array, taking its elements as the fields in
/// declaration order. No forge sends that, and it gives a body two readings: the server picks
/// the webhook secret from `repository.full_name` before the signature is checked
/// ([`crate::repository_name`]), and a `repository` that is an array has no `full_name` there
/// but does here, so a body signed with the global secret could build a repository that has
/// its own. `deserialize_map` is answered by serde_json for objects only.
macro_rules! objects_only {
    ($($name:ident),* $(,)?) => {$(
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Object;
                impl<'de> serde::de::Visitor<'de> for Object {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a JSON object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        map: A,
                    ) -> Result<$name, A::Error> {
                        // The derived (remote = "Self") function, not this trait's.
                        $name::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    }
                }
                deserializer.deserialize_map(Object)
            }
        }
    )*};
}
pub(crate) use objects_only;

checked_string!(Sha, validate::sha);
checked_string!(
    /// A full ref such as `refs/heads/main`.
    GitRef,
    validate::git_ref
);
checked_string!(
    /// A branch's short name such as `main`, as pull requests give their target.
    BranchName,
    validate::branch_name
);
checked_string!(RepoName, validate::repo_full_name);
checked_string!(CloneUrl, validate::clone_url);

/// The repository the webhook belongs to (for a pull request: its target).
#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub(crate) struct Repository {
    pub(crate) full_name: RepoName,
    pub(crate) clone_url: CloneUrl,
    pub(crate) html_url: Option<String>,
    pub(crate) default_branch: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(remote = "Self")]
pub(crate) struct User {
    pub(crate) login: Option<String>,
}

objects_only!(Repository, User);

/// Reads `body` as a `T`.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(located)?;
    de.end().map_err(|e| ParseError::NotJson(e.to_string()))?;
    Ok(value)
}

fn located(err: serde_path_to_error::Error<serde_json::Error>) -> ParseError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    if !inner.is_data() {
        return ParseError::NotJson(inner.to_string());
    }
    let message = inner.to_string();
    // serde reports a missing field at its parent, naming the field only in the message; the
    // full path is what tells whoever sent the payload what to fix.
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field)
    {
        let path = if path == "." {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        };
        return ParseError::Field {
            path,
            message: "missing".to_owned(),
        };
    }
    let path = if path == "." {
        "(root)".to_owned()
    } else {
        path
    };
    ParseError::Field { path, message }
}
