//! A pipeline's `concurrency:` group name, which may hold placeholders (`deploy-{branch}`,
//! GitLab's `resource_group: production-$CI_COMMIT_REF_SLUG`) filled in for each job.

use raibid_model::Event;

/// The longest template as written, and the longest group once rendered: the name shows in
/// logs and commit statuses, and longer names (a long branch) are cut, which can only make
/// two jobs share a group, never let two jobs of one group run together.
pub const MAX_GROUP_LEN: usize = 128;

const PLACEHOLDERS: [&str; 4] = ["branch", "ref", "event", "matrix"];

/// What a job fills the placeholders with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupContext {
    /// The job's branch as `when: branch` sees it (for a pull request, the branch it
    /// targets); `None` for a tag build.
    pub branch: Option<String>,
    /// The full ref (`refs/heads/main`, `refs/pull/7/head`).
    pub git_ref: String,
    pub event: Event,
    /// The matrix variant's name; `None` without a matrix.
    pub matrix: Option<String>,
}

/// Checks a template as written: literal letters, digits, `.`, `_`, `-` and the placeholders
/// `{branch}`, `{ref}`, `{event}`, `{matrix}`; starting with a letter or digit.
pub(crate) fn check(template: &str) -> Result<(), String> {
    let invalid = |why: String| {
        Err(format!(
            "invalid concurrency group {template:?}: {why}; use letters, digits, '.', '_', '-' \
             and the placeholders {{branch}}, {{ref}}, {{event}}, {{matrix}}, at most \
             {MAX_GROUP_LEN} characters, starting with a letter or digit"
        ))
    };
    if template.is_empty() || template.len() > MAX_GROUP_LEN {
        return invalid("empty or too long".into());
    }
    if !template.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '{') {
        return invalid("it starts with another character".into());
    }
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('{') {
            let Some((name, tail)) = after.split_once('}') else {
                return invalid("a '{' without its '}'".into());
            };
            if !PLACEHOLDERS.contains(&name) {
                return invalid(format!("{{{name}}} is no placeholder"));
            }
            rest = tail;
        } else {
            let c = rest.chars().next().expect("not empty");
            if !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
                return invalid(format!("{c:?} is not allowed"));
            }
            rest = &rest[c.len_utf8()..];
        }
    }
    Ok(())
}

/// The group `template` (checked by [`check`]) names for a job: each placeholder's value with
/// characters other than letters, digits, `.`, `_`, `-` made `-`, `none` for a value the job
/// has not (a tag build's `{branch}`), the whole cut to [`MAX_GROUP_LEN`].
pub fn render(template: &str, ctx: &GroupContext) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some((name, tail)) = rest[start + 1..].split_once('}') else {
            break;
        };
        let value = match name {
            "branch" => ctx.branch.clone(),
            "ref" => Some(ctx.git_ref.clone()),
            "event" => Some(ctx.event.to_string()),
            "matrix" => ctx.matrix.clone(),
            _ => None,
        };
        let value = value
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "none".into());
        out.extend(value.chars().map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        }));
        rest = tail;
    }
    out.push_str(rest);
    out.chars().take(MAX_GROUP_LEN).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_checked_as_written() {
        for ok in [
            "deploy",
            "deploy-{branch}",
            "{event}.{ref}",
            "db_1-{matrix}",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("", "empty"),
            ("a/b", "'/' is not allowed"),
            ("deploy-{sha}", "{sha} is no placeholder"),
            ("deploy-{branch", "without its '}'"),
            ("-x", "starts with another character"),
            (&"x".repeat(129), "too long"),
        ] {
            let e = check(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn placeholders_are_filled_in_and_made_safe() {
        let ctx = GroupContext {
            branch: Some("feature/login page".into()),
            git_ref: "refs/pull/7/head".into(),
            event: Event::PullRequest,
            matrix: Some("RUST=1.80,OS=linux".into()),
        };
        assert_eq!(render("deploy", &ctx), "deploy");
        assert_eq!(
            render("preview-{branch}", &ctx),
            "preview-feature-login-page"
        );
        assert_eq!(
            render("{event}-{ref}", &ctx),
            "pull_request-refs-pull-7-head"
        );
        assert_eq!(render("db-{matrix}", &ctx), "db-RUST-1.80-OS-linux");
        let tag = GroupContext {
            branch: None,
            git_ref: "refs/tags/v1".into(),
            event: Event::Tag,
            matrix: None,
        };
        assert_eq!(render("deploy-{branch}-{matrix}", &tag), "deploy-none-none");
        let long = GroupContext {
            branch: Some("b".repeat(300)),
            ..tag
        };
        assert_eq!(render("x-{branch}", &long).len(), MAX_GROUP_LEN);
    }
}
