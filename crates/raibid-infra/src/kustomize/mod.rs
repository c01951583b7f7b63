//! The subset of Kustomize that `infra/` uses, in Rust, so that rendering needs no `kubectl`
//! (Debian does not package it, and CI is a fresh Debian machine).
//!
//! Supported: `resources` (files and directories), `namespace`, `labels` (metadata only),
//! `patches` (strategic-merge or JSON 6902, from a file or inline, with an optional `target`),
//! and `configMapGenerator` with `disableNameSuffixHash`. Anything else in a kustomization is an
//! error that names the field, never silently ignored. When `kubectl` is installed, a test
//! renders every kustomization both ways and compares the objects.

mod file;
mod patch;

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::InfraError;
use crate::kinds;
use crate::manifest::{self, Manifest};
use crate::tree::{self, Tree};

use file::{ConfigMapGenerator, Kustomization};

/// Renders the kustomization in `dir` (a directory of `tree`).
pub fn build(tree: &Tree, dir: &str) -> Result<Vec<Manifest>, InfraError> {
    build_dir(tree, dir, &mut Vec::new())
}

fn build_dir(tree: &Tree, dir: &str, stack: &mut Vec<String>) -> Result<Vec<Manifest>, InfraError> {
    let file = format!("{dir}/kustomization.yaml");
    let error = |message: String| InfraError::Kustomize {
        file: file.clone(),
        message,
    };
    if stack.iter().any(|d| d == dir) {
        return Err(error(format!(
            "includes itself through {}",
            stack.join(" -> ")
        )));
    }
    let text = tree
        .read(&file)
        .ok_or_else(|| error(format!("no kustomization.yaml in {dir}")))?;
    let kustomization = Kustomization::parse(text).map_err(error)?;

    stack.push(dir.to_owned());
    let mut resources = Vec::new();
    for resource in &kustomization.resources {
        let path = tree::join(dir, resource).map_err(error)?;
        if tree.is_dir(&path) {
            resources.extend(build_dir(tree, &path, stack)?);
        } else {
            let text = tree
                .read(&path)
                .ok_or_else(|| error(format!("resource {resource} not found ({path})")))?;
            for object in manifest::parse_documents(&path, text)? {
                resources.push(Manifest::new(path.clone(), object));
            }
        }
    }
    stack.pop();

    for generator in &kustomization.config_map_generator {
        resources.push(generate_config_map(tree, dir, &file, generator).map_err(error)?);
    }
    for entry in &kustomization.patches {
        patch::apply(tree, dir, entry, &mut resources).map_err(error)?;
    }
    if let Some(namespace) = &kustomization.namespace {
        for resource in &mut resources {
            set_namespace(&mut resource.object, namespace);
        }
    }
    for set in &kustomization.labels {
        for resource in &mut resources {
            let labels = metadata_map(&mut resource.object, "labels");
            for (key, value) in &set.pairs {
                labels.insert(key.clone(), Value::String(value.clone()));
            }
        }
    }
    let mut seen = BTreeSet::new();
    for resource in &resources {
        if !seen.insert(resource.object_ref()) {
            return Err(error(format!(
                "{} is defined twice (second time in {})",
                resource.object_ref(),
                resource.source
            )));
        }
    }
    Ok(resources)
}

fn generate_config_map(
    tree: &Tree,
    dir: &str,
    kustomization_file: &str,
    generator: &ConfigMapGenerator,
) -> Result<Manifest, String> {
    if !generator.options.disable_name_suffix_hash {
        return Err(format!(
            "configMapGenerator {}: only `options.disableNameSuffixHash: true` is supported \
             (name references to hashed names are not rewritten)",
            generator.name
        ));
    }
    let mut data = Map::new();
    for entry in &generator.files {
        let (key, relative) = entry.split_once('=').unwrap_or_else(|| {
            let file_name = entry.rsplit('/').next().unwrap_or(entry);
            (file_name, entry.as_str())
        });
        let path = tree::join(dir, relative)?;
        if !path.starts_with(&format!("{dir}/")) {
            return Err(format!("configMapGenerator file {entry} is outside {dir}"));
        }
        let text = tree
            .read(&path)
            .ok_or_else(|| format!("configMapGenerator file {entry} not found ({path})"))?;
        data.insert(key.to_owned(), Value::String(text.to_owned()));
    }
    for literal in &generator.literals {
        let (key, value) = literal
            .split_once('=')
            .ok_or_else(|| format!("literal {literal:?} is not key=value"))?;
        data.insert(key.to_owned(), Value::String(value.to_owned()));
    }
    let mut metadata = json!({"name": generator.name});
    if let Some(namespace) = &generator.namespace {
        metadata["namespace"] = json!(namespace);
    }
    if !generator.options.labels.is_empty() {
        metadata["labels"] = json!(generator.options.labels);
    }
    if !generator.options.annotations.is_empty() {
        metadata["annotations"] = json!(generator.options.annotations);
    }
    Ok(Manifest::new(
        kustomization_file,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}),
    ))
}

/// Kustomize's namespace transformer: namespaced objects move, and ServiceAccount subjects of
/// role bindings that pointed at the default namespace follow.
fn set_namespace(object: &mut Value, namespace: &str) {
    let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    if kinds::is_namespaced(&api_version, &kind) {
        object["metadata"]["namespace"] = Value::String(namespace.to_owned());
    }
    if (kind == "RoleBinding" || kind == "ClusterRoleBinding")
        && let Some(subjects) = object["subjects"].as_array_mut()
    {
        for subject in subjects {
            let points_at_default =
                subject["namespace"].is_null() || subject["namespace"] == "default";
            if subject["kind"] == "ServiceAccount" && points_at_default {
                subject["namespace"] = Value::String(namespace.to_owned());
            }
        }
    }
}

fn metadata_map<'a>(object: &'a mut Value, field: &str) -> &'a mut Map<String, Value> {
    let metadata = object
        .as_object_mut()
        .expect("resources are objects")
        .entry("metadata")
        .or_insert_with(|| json!({}));
    let map = metadata
        .as_object_mut()
        .expect("metadata is an object")
        .entry(field)
        .or_insert_with(|| json!({}));
    if !map.is_object() {
        *map = json!({});
    }
    map.as_object_mut().expect("just made an object")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> Tree {
        Tree::from_files(
            files
                .iter()
                .map(|(p, t)| ((*p).to_owned(), (*t).to_owned())),
        )
    }

    const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n";

    #[test]
    fn sets_namespace_and_labels_but_not_on_namespaces() {
        let t = tree(&[
            (
                "base/kustomization.yaml",
                "resources: [cm.yaml, ns.yaml]\nnamespace: ci\nlabels:\n  - pairs: {x: y}\n",
            ),
            ("base/cm.yaml", CM),
            (
                "base/ns.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ci\n",
            ),
        ]);
        let out = build(&t, "base").unwrap();
        assert_eq!(out[0].namespace(), Some("ci"));
        assert_eq!(out[0].label("x"), Some("y"));
        assert_eq!(out[0].source, "base/cm.yaml");
        assert_eq!(out[1].namespace(), None);
    }

    #[test]
    fn refuses_unsupported_fields_by_name() {
        let t = tree(&[(
            "k/kustomization.yaml",
            "resources: []\nimages:\n  - name: x\n",
        )]);
        let err = build(&t, "k").unwrap_err().to_string();
        assert!(err.starts_with("k/kustomization.yaml: "), "{err}");
        assert!(err.contains("unknown field `images`"), "{err}");
    }

    #[test]
    fn refuses_cycles_and_duplicates() {
        let cycle = tree(&[
            ("a/kustomization.yaml", "resources: [../b]\n"),
            ("b/kustomization.yaml", "resources: [../a]\n"),
        ]);
        assert!(
            build(&cycle, "a")
                .unwrap_err()
                .to_string()
                .contains("includes itself")
        );
        let twice = tree(&[
            ("a/kustomization.yaml", "resources: [cm.yaml, cm2.yaml]\n"),
            ("a/cm.yaml", CM),
            ("a/cm2.yaml", CM),
        ]);
        assert!(
            build(&twice, "a")
                .unwrap_err()
                .to_string()
                .contains("defined twice")
        );
    }

    #[test]
    fn generates_config_maps_from_files() {
        let t = tree(&[
            (
                "g/kustomization.yaml",
                "configMapGenerator:\n  - name: c\n    files: [config.yaml]\n    options:\n      disableNameSuffixHash: true\n",
            ),
            ("g/config.yaml", "a: 1\n"),
        ]);
        let out = build(&t, "g").unwrap();
        assert_eq!(out[0].object["data"]["config.yaml"], "a: 1\n");
        let hashed = tree(&[(
            "g/kustomization.yaml",
            "configMapGenerator:\n  - name: c\n    literals: [a=b]\n",
        )]);
        assert!(
            build(&hashed, "g")
                .unwrap_err()
                .to_string()
                .contains("disableNameSuffixHash")
        );
    }
}
