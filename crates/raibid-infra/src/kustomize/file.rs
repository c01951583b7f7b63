//! The `kustomization.yaml` fields the built-in renderer understands. Unknown fields are
//! refused (`deny_unknown_fields`), so an unsupported feature is an error, not a silent gap.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Kustomization {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: Vec<LabelSet>,
    #[serde(default)]
    pub patches: Vec<PatchEntry>,
    #[serde(default)]
    pub config_map_generator: Vec<ConfigMapGenerator>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSet {
    pub pairs: BTreeMap<String, String>,
    #[serde(default)]
    pub include_selectors: bool,
    #[serde(default)]
    pub include_templates: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchEntry {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub patch: Option<String>,
    #[serde(default)]
    pub target: Option<Target>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigMapGenerator {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub literals: Vec<String>,
    #[serde(default)]
    pub options: GeneratorOptions,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GeneratorOptions {
    #[serde(default)]
    pub disable_name_suffix_hash: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Kustomization {
    pub fn parse(text: &str) -> Result<Self, String> {
        let parsed: Self = serde_yaml::from_str(text).map_err(|e| {
            format!(
                "{e} (raibid renders a subset of Kustomize; use `kubectl kustomize` for the rest)"
            )
        })?;
        if let Some(kind) = parsed.kind.as_deref().filter(|k| *k != "Kustomization") {
            return Err(format!("kind is {kind}, expected Kustomization"));
        }
        if let Some(version) = parsed
            .api_version
            .as_deref()
            .filter(|v| !v.starts_with("kustomize.config.k8s.io/"))
        {
            return Err(format!(
                "apiVersion is {version}, expected kustomize.config.k8s.io/v1beta1"
            ));
        }
        if parsed
            .labels
            .iter()
            .any(|l| l.include_selectors || l.include_templates)
        {
            return Err(
                "labels with includeSelectors or includeTemplates are not supported: write \
                 selector and pod template labels in the resources themselves"
                    .into(),
            );
        }
        Ok(parsed)
    }
}
