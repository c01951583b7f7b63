//! One rendered Kubernetes object and the file it came from.
//!
//! Objects are kept as JSON values until they are validated: the same value is checked against
//! the OpenAPI schemas, converted into `k8s-openapi` types and sent to the API server, and the
//! file name travels with it so that every error can point at the YAML a person has to edit.

use std::fmt;

use serde_json::Value;

use crate::InfraError;

#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Path of the YAML file below `infra/` (or the kustomization that generated the object).
    pub source: String,
    pub object: Value,
}

/// `Kind/name` plus the namespace when there is one: how objects are named in messages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{} (namespace {ns})", self.kind, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

impl Manifest {
    pub fn new(source: impl Into<String>, object: Value) -> Self {
        Self {
            source: source.into(),
            object,
        }
    }

    pub fn api_version(&self) -> &str {
        self.object["apiVersion"].as_str().unwrap_or_default()
    }

    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"].as_str()
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.object["metadata"]["labels"][key].as_str()
    }

    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            api_version: self.api_version().to_owned(),
            kind: self.kind().to_owned(),
            namespace: self.namespace().map(str::to_owned),
            name: self.name().to_owned(),
        }
    }

    /// The API group (`""` for core objects).
    pub fn group(&self) -> &str {
        match self.api_version().split_once('/') {
            Some((group, _)) => group,
            None => "",
        }
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(&self.object).expect("JSON values always serialize to YAML")
    }
}

/// Parses a multi-document YAML file; empty documents (a trailing `---`) are skipped.
pub fn parse_documents(file: &str, text: &str) -> Result<Vec<Value>, InfraError> {
    use serde::Deserialize;
    let invalid = |message: String| InfraError::Manifest {
        file: file.to_owned(),
        message,
    };
    let mut values = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(document)
            .map_err(|e| invalid(format!("invalid YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let json = serde_json::to_value(value)
            .map_err(|e| invalid(format!("not representable as JSON: {e}")))?;
        values.push(json);
    }
    Ok(values)
}

/// Writes objects as one multi-document YAML stream, the way `kubectl kustomize` prints them.
pub fn to_yaml_stream(manifests: &[Manifest]) -> String {
    manifests
        .iter()
        .map(Manifest::to_yaml)
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_empty_documents_and_names_the_file_on_errors() {
        let docs = parse_documents("a.yaml", "---\nkind: A\n---\n---\nkind: B\n").unwrap();
        assert_eq!(docs.len(), 2);
        let err = parse_documents("broken.yaml", "kind: [")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("broken.yaml: invalid YAML"), "{err}");
    }
}
