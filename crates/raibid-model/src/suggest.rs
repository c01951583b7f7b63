//! Which expected name a misspelt one is a slip of, for the errors of the files people write
//! (`.raibid.yaml`, the configuration): serde lists every name a place takes, and a long list
//! hides the one that was meant.

/// serde's "unknown field `failur`, expected one of ..." (or "unknown variant") with the
/// expected name it is a slip of, as cargo suggests: `(did you mean `failure`?)` after the
/// name. Slips are counted in edits, two letters swapped being one (`redsi`, `redis`), up to
/// one in three letters. A name no expected one is close to stays as serde says it.
pub fn misspelt(message: &str) -> Option<String> {
    let (kind, at) = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|kind| message.find(kind).map(|at| (*kind, at)))?;
    let start = at + kind.len();
    let end = start + message[start..].find('`')?;
    let given = &message[start..end];
    let expected = &message[end + 1..];
    let expected = &expected[expected.find("expected ")?..];
    let closest = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|name| (strsim::osa_distance(given, name), name))
        .filter(|(distance, name)| {
            *distance > 0 && *distance <= given.len().max(name.len()).max(3) / 3
        })
        .min_by_key(|(distance, _)| *distance)?
        .1;
    Some(format!(
        "{} (did you mean `{closest}`?){}",
        &message[..=end],
        &message[end + 1..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slip_of_an_expected_name_is_named() {
        let cases = [
            (
                "steps[2]: unknown field `failur`, expected one of `name`, `run`, `failure`, `retry`",
                "steps[2]: unknown field `failur` (did you mean `failure`?), expected one of \
                 `name`, `run`, `failure`, `retry`",
            ),
            (
                "steps[0]: unknown field `dependson`, expected one of `depends-on`, `depends_on`",
                "steps[0]: unknown field `dependson` (did you mean `depends-on`?), expected one \
                 of `depends-on`, `depends_on`",
            ),
            (
                "steps[0].failure: unknown variant `ignroe`, expected `fail` or `ignore`",
                "steps[0].failure: unknown variant `ignroe` (did you mean `ignore`?), expected \
                 `fail` or `ignore`",
            ),
            (
                "unknown field `step`, expected one of `image`, `steps`, `when`",
                "unknown field `step` (did you mean `steps`?), expected one of `image`, \
                 `steps`, `when`",
            ),
        ];
        for (serde, ours) in cases {
            assert_eq!(misspelt(serde).as_deref(), Some(ours));
        }
        // Nothing close: serde's words.
        for untouched in [
            "steps[0]: unknown field `cmd`, expected one of `name`, `run`, `commands`",
            "steps[0]: unknown field `x`, expected one of `name`",
            "unknown field `a`, there are no fields",
        ] {
            assert_eq!(misspelt(untouched), None);
        }
    }
}
