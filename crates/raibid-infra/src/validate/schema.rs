//! Validation against the published schemas, offline.
//!
//! The Kubernetes OpenAPI v3 documents (release 1.35) and the KEDA and Flux CRDs are embedded
//! from `tests/fixtures/` unchanged. Both are OpenAPI 3.0 schemas, which differ from JSON Schema
//! in a few ways that matter, so each schema is translated before use:
//!
//! * objects that list `properties` reject other fields (`additionalProperties: false`) unless
//!   they say `x-kubernetes-preserve-unknown-fields`: the API server drops unknown fields, or
//!   refuses them with strict field validation, so a typo must fail here too;
//! * `x-kubernetes-int-or-string` and `format: int-or-string` accept an integer or a string;
//! * `nullable: true` accepts `null`;
//! * descriptions, defaults and formats are dropped (formats like `int32` and `quantity` are not
//!   JSON Schema formats; quantities carry their own `pattern`).
//!
//! CEL rules (`x-kubernetes-validations`) are not evaluated: that needs an API server.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value, json};

use crate::kinds::Findings;
use crate::path::FieldPath;

/// The Kubernetes OpenAPI v3 documents raibid validates core objects against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpenApiDocument {
    CoreV1,
    AppsV1,
    NetworkingV1,
    RbacV1,
}

/// The CustomResourceDefinitions raibid validates custom objects against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrdFile {
    ScaledJobs,
    TriggerAuthentications,
    GitRepositories,
    HelmRepositories,
    Kustomizations,
    HelmReleases,
}

impl OpenApiDocument {
    fn text(self) -> &'static str {
        match self {
            Self::CoreV1 => {
                include_str!("../../../../tests/fixtures/k8s-openapi/api__v1_openapi.json")
            }
            Self::AppsV1 => {
                include_str!("../../../../tests/fixtures/k8s-openapi/apis__apps__v1_openapi.json")
            }
            Self::NetworkingV1 => include_str!(
                "../../../../tests/fixtures/k8s-openapi/apis__networking.k8s.io__v1_openapi.json"
            ),
            Self::RbacV1 => include_str!(
                "../../../../tests/fixtures/k8s-openapi/apis__rbac.authorization.k8s.io__v1_openapi.json"
            ),
        }
    }

    fn parsed(self) -> &'static Value {
        static DOCS: [OnceLock<Value>; 4] = [const { OnceLock::new() }; 4];
        DOCS[self as usize].get_or_init(|| {
            serde_json::from_str(self.text()).expect("embedded OpenAPI document is JSON")
        })
    }
}

impl CrdFile {
    fn text(self) -> &'static str {
        match self {
            Self::ScaledJobs => {
                include_str!("../../../../tests/fixtures/crds/keda/keda.sh_scaledjobs.yaml")
            }
            Self::TriggerAuthentications => include_str!(
                "../../../../tests/fixtures/crds/keda/keda.sh_triggerauthentications.yaml"
            ),
            Self::GitRepositories => include_str!(
                "../../../../tests/fixtures/crds/flux/source.toolkit.fluxcd.io_gitrepositories.yaml"
            ),
            Self::HelmRepositories => include_str!(
                "../../../../tests/fixtures/crds/flux/source.toolkit.fluxcd.io_helmrepositories.yaml"
            ),
            Self::Kustomizations => include_str!(
                "../../../../tests/fixtures/crds/flux/kustomize.toolkit.fluxcd.io_kustomizations.yaml"
            ),
            Self::HelmReleases => include_str!(
                "../../../../tests/fixtures/crds/flux/helm.toolkit.fluxcd.io_helmreleases.yaml"
            ),
        }
    }

    /// The `openAPIV3Schema` of `version`, or `None` when the CRD does not serve it.
    fn schema(self, version: &str) -> Option<Value> {
        let crd: Value = serde_yaml::from_str(self.text()).expect("embedded CRD is YAML");
        crd["spec"]["versions"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == version && v["served"] == true)
            .map(|v| v["schema"]["openAPIV3Schema"].clone())
    }
}

/// Compiled validators, built on first use and shared (the ScaledJob schema alone embeds the
/// whole pod spec, so compiling it once matters).
#[derive(Default)]
pub struct Schemas {
    compiled: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

impl Schemas {
    pub fn shared() -> &'static Schemas {
        static SHARED: OnceLock<Schemas> = OnceLock::new();
        SHARED.get_or_init(Schemas::default)
    }

    pub fn check_core(&self, document: OpenApiDocument, name: &str, value: &Value) -> Findings {
        let key = format!("{document:?}/{name}");
        let validator = self.get_or_build(&key, || core_schema(document, name));
        run(&validator, value)
    }

    /// `None` when the CRD does not serve `version` (the object's apiVersion is wrong).
    pub fn check_crd(&self, crd: CrdFile, version: &str, value: &Value) -> Option<Findings> {
        let key = format!("{crd:?}/{version}");
        let cached = self
            .compiled
            .lock()
            .expect("not poisoned")
            .get(&key)
            .cloned();
        let validator = match cached {
            Some(validator) => validator,
            None => {
                let schema = crd.schema(version)?;
                self.get_or_build(&key, || translate(&schema))
            }
        };
        Some(run(&validator, value))
    }

    fn get_or_build(
        &self,
        key: &str,
        schema: impl FnOnce() -> Value,
    ) -> Arc<jsonschema::Validator> {
        if let Some(v) = self.compiled.lock().expect("not poisoned").get(key) {
            return v.clone();
        }
        let built = Arc::new(compile(&schema()));
        self.compiled
            .lock()
            .expect("not poisoned")
            .entry(key.to_owned())
            .or_insert(built)
            .clone()
    }
}

/// Compiles a translated schema. The inputs are the embedded fixtures, so a failure here is a
/// bug in the translation, not a user error.
pub fn compile(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(false)
        .build(schema)
        .unwrap_or_else(|e| panic!("embedded schema does not compile: {e}"))
}

/// Every violation, with additional-property errors pointing at the offending field itself.
pub fn run(validator: &jsonschema::Validator, value: &Value) -> Findings {
    let mut findings = Vec::new();
    for error in validator.iter_errors(value) {
        let path = FieldPath::from_pointer(error.instance_path().as_str());
        match error.kind() {
            jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                for field in unexpected {
                    findings.push((
                        path.clone().key(field.clone()),
                        format!("unknown field `{field}`"),
                    ));
                }
            }
            _ => findings.push((path, error.to_string())),
        }
    }
    findings
}

/// The schema `name` of `document`, with everything it references gathered under
/// `definitions` so that the validator compiles only what it needs.
fn core_schema(document: OpenApiDocument, name: &str) -> Value {
    schema_in(&document.parsed()["components"]["schemas"], name)
}

/// The schema `name` among an OpenAPI document's `components.schemas`, self-contained.
fn schema_in(components: &Value, name: &str) -> Value {
    let mut needed = BTreeSet::new();
    let mut queue = vec![name.to_owned()];
    while let Some(next) = queue.pop() {
        if needed.insert(next.clone()) {
            collect_refs(&components[&next], &mut queue);
        }
    }
    let definitions: Map<String, Value> = needed
        .into_iter()
        .map(|n| {
            let translated = translate(&components[&n]);
            (n, translated)
        })
        .collect();
    json!({
        "definitions": definitions,
        "$ref": format!("#/definitions/{name}"),
    })
}

fn collect_refs(schema: &Value, out: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix("#/components/schemas/") {
                            out.push(name.to_owned());
                        }
                    }
                    _ => collect_refs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Translates one OpenAPI 3.0 schema into the JSON Schema (draft 4) that Kubernetes means.
pub fn translate(schema: &Value) -> Value {
    let Value::Object(map) = schema else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        match key.as_str() {
            "properties" | "patternProperties" => {
                let translated = value
                    .as_object()
                    .map(|props| {
                        props
                            .iter()
                            .map(|(k, v)| (k.clone(), translate(v)))
                            .collect::<Map<_, _>>()
                    })
                    .unwrap_or_default();
                out.insert(key.clone(), Value::Object(translated));
            }
            "items" | "additionalProperties" | "not" => {
                out.insert(key.clone(), translate(value));
            }
            "allOf" | "anyOf" | "oneOf" => {
                let items = value.as_array().map(|a| a.iter().map(translate).collect());
                out.insert(key.clone(), Value::Array(items.unwrap_or_default()));
            }
            "$ref" => {
                let target = value.as_str().unwrap_or_default();
                let local = target.replace("#/components/schemas/", "#/definitions/");
                out.insert(key.clone(), Value::String(local));
            }
            "required" if value.as_array().is_some_and(Vec::is_empty) => {}
            "type" | "enum" | "required" | "minimum" | "maximum" | "exclusiveMinimum"
            | "exclusiveMaximum" | "minLength" | "maxLength" | "pattern" | "minItems"
            | "maxItems" | "uniqueItems" | "minProperties" | "maxProperties" | "multipleOf" => {
                out.insert(key.clone(), value.clone());
            }
            // Descriptions, defaults, formats and the x-kubernetes-* extensions handled below.
            _ => {}
        }
    }
    let flag = |name: &str| map.get(name).and_then(Value::as_bool).unwrap_or(false);
    let int_or_string = flag("x-kubernetes-int-or-string")
        || map.get("format").is_some_and(|f| f == "int-or-string");
    if int_or_string && !out.contains_key("anyOf") && !out.contains_key("oneOf") {
        out.remove("type");
        out.insert(
            "anyOf".into(),
            json!([{"type": "integer"}, {"type": "string"}]),
        );
    }
    if flag("x-kubernetes-embedded-resource")
        && let Some(Value::Object(props)) = out.get_mut("properties")
    {
        for field in ["apiVersion", "kind", "metadata"] {
            props.entry(field).or_insert_with(|| json!({}));
        }
    }
    if out.contains_key("properties")
        && !out.contains_key("additionalProperties")
        && !flag("x-kubernetes-preserve-unknown-fields")
    {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    if flag("nullable") {
        if let Some(Value::String(t)) = out.get("type").cloned() {
            out.insert("type".into(), json!([t, "null"]));
        }
        if let Some(Value::Array(values)) = out.get_mut("enum") {
            values.push(Value::Null);
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_with_properties_reject_unknown_fields() {
        let schema = translate(&json!({
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "required": []
        }));
        assert_eq!(schema["additionalProperties"], false);
        assert!(
            schema.get("required").is_none(),
            "draft 4 forbids an empty required list"
        );
        let open = translate(&json!({
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "x-kubernetes-preserve-unknown-fields": true
        }));
        assert!(open.get("additionalProperties").is_none());
    }

    #[test]
    fn int_or_string_accepts_both() {
        let validator = compile(&translate(&json!({"x-kubernetes-int-or-string": true})));
        assert!(run(&validator, &json!(8080)).is_empty());
        assert!(run(&validator, &json!("http")).is_empty());
        assert!(!run(&validator, &json!(true)).is_empty());
    }

    #[test]
    fn nullable_accepts_null() {
        let validator = compile(&translate(&json!({"type": "string", "nullable": true})));
        assert!(run(&validator, &Value::Null).is_empty());
    }

    #[test]
    fn core_schema_pulls_in_only_what_it_references() {
        let schema = core_schema(OpenApiDocument::CoreV1, "io.k8s.api.core.v1.ConfigMap");
        let definitions = schema["definitions"].as_object().unwrap();
        assert!(definitions.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
        assert!(!definitions.contains_key("io.k8s.api.core.v1.PodSpec"));
    }

    #[test]
    fn crd_schemas_exist_for_the_served_versions_only() {
        assert!(CrdFile::ScaledJobs.schema("v1alpha1").is_some());
        assert!(CrdFile::ScaledJobs.schema("v1").is_none());
        assert!(CrdFile::HelmReleases.schema("v2").is_some());
    }
}

/// The recorded Kubernetes API answers that the fake API server (`raibid-testkit`) serves to
/// the cluster status code and the dashboard: they are written for raibid, so they are held to
/// the published schemas here, item by item, or a test could pass against a shape no API server
/// returns.
#[cfg(test)]
mod api_fixtures {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/k8s-api");

    fn list(cluster: &str, file: &str) -> Value {
        let path = format!("{FIXTURES}/{cluster}/{file}");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn assert_valid(what: &str, validator: &jsonschema::Validator, value: &Value) {
        let findings = run(validator, value);
        assert!(findings.is_empty(), "{what}: {findings:?}");
    }

    fn clusters() -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(FIXTURES)
            .expect("tests/fixtures/k8s-api")
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert!(!names.is_empty());
        names
    }

    #[test]
    fn core_lists_match_the_kubernetes_openapi_documents() {
        let core = &OpenApiDocument::CoreV1.parsed()["components"]["schemas"];
        let batch_text =
            include_str!("../../../../tests/fixtures/k8s-openapi/apis__batch__v1_openapi.json");
        let batch: Value = serde_json::from_str(batch_text).unwrap();
        let batch = &batch["components"]["schemas"];
        let checks = [
            ("api_v1_nodes.json", core, "io.k8s.api.core.v1.NodeList", 2),
            ("api_v1_pods.json", core, "io.k8s.api.core.v1.PodList", 5),
            (
                "apis_batch_v1_jobs.json",
                batch,
                "io.k8s.api.batch.v1.JobList",
                2,
            ),
        ];
        for cluster in clusters() {
            for (file, components, name, at_least) in checks {
                let value = list(&cluster, file);
                let items = value["items"].as_array().expect("a list has items").len();
                assert!(items >= at_least, "{cluster}/{file}: {items} items");
                assert_valid(
                    &format!("{cluster}/{file}"),
                    &compile(&schema_in(components, name)),
                    &value,
                );
            }
        }
    }

    #[test]
    fn scaled_jobs_match_the_keda_crd() {
        for cluster in clusters() {
            let value = list(&cluster, "apis_keda.sh_v1alpha1_scaledjobs.json");
            assert_eq!(value["kind"], "ScaledJobList");
            let items = value["items"].as_array().expect("items");
            assert!(!items.is_empty());
            for item in items {
                let findings = Schemas::shared()
                    .check_crd(CrdFile::ScaledJobs, "v1alpha1", item)
                    .expect("v1alpha1 is served");
                assert!(findings.is_empty(), "{cluster}: {findings:?}");
            }
        }
    }

    #[test]
    fn a_wrong_field_in_a_recorded_answer_would_be_caught() {
        let core = &OpenApiDocument::CoreV1.parsed()["components"]["schemas"];
        let mut nodes = list(&clusters()[0], "api_v1_nodes.json");
        nodes["items"][0]["status"]["nodeInfo"]["arch"] = json!("arm64");
        let findings = run(
            &compile(&schema_in(core, "io.k8s.api.core.v1.NodeList")),
            &nodes,
        );
        assert!(
            findings
                .iter()
                .any(|(_, m)| m.contains("unknown field `arch`")),
            "{findings:?}"
        );
    }
}
