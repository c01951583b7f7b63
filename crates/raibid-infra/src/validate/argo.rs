//! ArgoCD `Application`: no ArgoCD CRD ships with the fixtures, so this checks the structure of
//! the subset raibid uses (a single source, a destination, an automated sync policy) and
//! rejects anything else, rather than letting an unchecked object through.

use std::sync::OnceLock;

use serde_json::{Value, json};

use super::schema;
use crate::kinds::Findings;

pub fn check_application(value: &Value) -> Findings {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    let validator = VALIDATOR.get_or_init(|| schema::compile(&application_schema()));
    schema::run(validator, value)
}

fn application_schema() -> Value {
    let string = json!({"type": "string", "minLength": 1});
    json!({
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": false,
        "properties": {
            "apiVersion": {"enum": ["argoproj.io/v1alpha1"]},
            "kind": {"enum": ["Application"]},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": ["project", "source", "destination"],
                "additionalProperties": false,
                "properties": {
                    "project": string,
                    "source": {
                        "type": "object",
                        "required": ["repoURL", "path"],
                        "additionalProperties": false,
                        "properties": {
                            "repoURL": string,
                            "path": string,
                            "targetRevision": string,
                        }
                    },
                    "destination": {
                        "type": "object",
                        "required": ["namespace"],
                        "additionalProperties": false,
                        "properties": {
                            "server": string,
                            "name": string,
                            "namespace": string,
                        }
                    },
                    "syncPolicy": {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {
                            "automated": {
                                "type": "object",
                                "additionalProperties": false,
                                "properties": {
                                    "prune": {"type": "boolean"},
                                    "selfHeal": {"type": "boolean"},
                                    "allowEmpty": {"type": "boolean"},
                                }
                            },
                            "syncOptions": {"type": "array", "items": string},
                        }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_a_misspelled_source_field() {
        let app = json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": "x"},
            "spec": {
                "project": "default",
                "source": {"repoURL": "http://git", "path": "p", "targetRevison": "main"},
                "destination": {"namespace": "ns", "server": "https://kubernetes.default.svc"}
            }
        });
        let findings = check_application(&app);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].0.to_string(), "spec.source.targetRevison");
    }
}
