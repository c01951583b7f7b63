//! Differences between the manifests as written and as configured, so `raibid infra validate`
//! can tell a GitOps user which committed values their configuration would change.

use std::fmt;

use serde_json::Value;

use crate::manifest::{Manifest, ObjectRef};
use crate::path::FieldPath;

#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    pub source: String,
    pub object: ObjectRef,
    pub path: FieldPath,
    pub written: Value,
    pub configured: Value,
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}: {} in the file, {} with the configuration",
            self.source, self.object, self.path, self.written, self.configured
        )
    }
}

/// Field-level differences between `written` and `configured` (the same objects, in the
/// same order, before and after `apply_config`).
pub fn drift(written: &[Manifest], configured: &[Manifest]) -> Vec<Drift> {
    let mut out = Vec::new();
    for (before, after) in written.iter().zip(configured) {
        let mut paths = Vec::new();
        diff(&before.object, &after.object, FieldPath::root(), &mut paths);
        out.extend(paths.into_iter().map(|(path, written, configured)| Drift {
            source: before.source.clone(),
            object: before.object_ref(),
            path,
            written,
            configured,
        }));
    }
    out
}

fn diff(a: &Value, b: &Value, path: FieldPath, out: &mut Vec<(FieldPath, Value, Value)>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                let null = Value::Null;
                diff(
                    x.get(key).unwrap_or(&null),
                    y.get(key).unwrap_or(&null),
                    path.clone().key(key.clone()),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff(p, q, path.clone().index(i), out);
            }
        }
        _ if a != b => out.push((path, a.clone(), b.clone())),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reports_changed_leaves() {
        let a = Manifest::new(
            "f.yaml",
            json!({"kind": "X", "metadata": {"name": "n"}, "spec": {"a": [1, 2], "b": "x"}}),
        );
        let b = Manifest::new(
            "f.yaml",
            json!({"kind": "X", "metadata": {"name": "n"}, "spec": {"a": [1, 3], "b": "x"}}),
        );
        let found = drift(std::slice::from_ref(&a), &[b]);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].to_string(),
            "f.yaml: X/n: spec.a[1]: 2 in the file, 3 with the configuration"
        );
        assert!(drift(std::slice::from_ref(&a), std::slice::from_ref(&a)).is_empty());
    }
}
