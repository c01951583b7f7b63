//! Strict conversion of core objects into their `k8s-openapi` types.
//!
//! `k8s-openapi` ignores unknown fields when deserializing (as the API server prunes them), so a
//! misspelled `replicaz:` would vanish silently. The object is therefore converted, serialized
//! back, and every field of the input that did not survive the round trip is reported.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::kinds::Findings;
use crate::path::FieldPath;

pub fn check<K: DeserializeOwned + Serialize>(value: &Value) -> Findings {
    match serde_path_to_error::deserialize::<_, K>(value) {
        Err(e) => vec![(from_serde_path(e.path()), e.into_inner().to_string())],
        Ok(typed) => {
            let back = serde_json::to_value(&typed).expect("k8s-openapi types serialize");
            let mut findings = Vec::new();
            dropped_fields(value, &back, FieldPath::root(), &mut findings);
            findings
        }
    }
}

fn from_serde_path(path: &serde_path_to_error::Path) -> FieldPath {
    use serde_path_to_error::Segment;
    path.iter()
        .fold(FieldPath::root(), |acc, segment| match segment {
            Segment::Seq { index } => acc.index(*index),
            Segment::Map { key } => acc.key(key.clone()),
            Segment::Enum { variant } => acc.key(variant.clone()),
            Segment::Unknown => acc,
        })
}

/// Fields present in `input` but missing from `output` (nulls mean "unset" and are ignored).
fn dropped_fields(input: &Value, output: &Value, path: FieldPath, findings: &mut Findings) {
    match (input, output) {
        (Value::Object(input), Value::Object(output)) => {
            for (key, value) in input {
                let here = path.clone().key(key.clone());
                match output.get(key) {
                    Some(out) => dropped_fields(value, out, here, findings),
                    None if value.is_null() => {}
                    None => findings.push((here, format!("unknown field `{key}`"))),
                }
            }
        }
        (Value::Array(input), Value::Array(output)) => {
            for (i, (a, b)) in input.iter().zip(output).enumerate() {
                dropped_fields(a, b, path.clone().index(i), findings);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::json;

    use super::*;

    fn deployment(spec: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": spec})
    }

    #[test]
    fn accepts_a_valid_object() {
        let value = deployment(json!({
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]}}
        }));
        assert_eq!(check::<Deployment>(&value), Vec::new());
    }

    #[test]
    fn names_a_misspelled_field() {
        let value = deployment(json!({
            "replicaz": 2,
            "selector": {},
            "template": {"spec": {"containers": [{"name": "c", "imagePullPolicyy": "Always"}]}}
        }));
        let findings = check::<Deployment>(&value);
        let printed: Vec<String> = findings.iter().map(|(p, m)| format!("{p}: {m}")).collect();
        assert_eq!(
            printed,
            [
                "spec.replicaz: unknown field `replicaz`",
                "spec.template.spec.containers[0].imagePullPolicyy: unknown field `imagePullPolicyy`"
            ]
        );
    }

    #[test]
    fn names_a_wrong_type() {
        let value = deployment(json!({"replicas": "two", "selector": {}, "template": {}}));
        let findings = check::<Deployment>(&value);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].0.to_string(), "spec.replicas");
        assert!(findings[0].1.contains("invalid type"), "{}", findings[0].1);
    }
}
