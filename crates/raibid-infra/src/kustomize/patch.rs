//! Kustomize `patches`: strategic-merge patches (maps) and JSON 6902 patches (lists of ops).
//!
//! Strategic merge on core kinds merges the lists Kubernetes merges by key (containers and
//! volumes by `name`, volume mounts by `mountPath`, container ports by `containerPort`) and
//! replaces every other list, as the API does for lists without a merge key. On custom
//! resources Kustomize knows no merge keys, so lists are replaced whole (JSON merge patch);
//! that is why the overlays patch ScaledJob containers with JSON 6902 ops.

use serde_json::Value;

use super::file::{PatchEntry, Target};
use crate::kinds;
use crate::manifest::{self, Manifest};
use crate::tree::{self, Tree};

pub fn apply(
    tree: &Tree,
    dir: &str,
    entry: &PatchEntry,
    resources: &mut [Manifest],
) -> Result<(), String> {
    let (source, text) = match (&entry.path, &entry.patch) {
        (Some(path), None) => {
            let full = tree::join(dir, path)?;
            let text = tree
                .read(&full)
                .ok_or_else(|| format!("patch {path} not found ({full})"))?;
            (full, text.to_owned())
        }
        (None, Some(inline)) => (
            format!("{dir}/kustomization.yaml (inline patch)"),
            inline.clone(),
        ),
        _ => return Err("a patch needs exactly one of `path` and `patch`".into()),
    };
    let documents = manifest::parse_documents(&source, &text).map_err(|e| e.to_string())?;
    for document in documents {
        match &document {
            Value::Array(ops) => {
                let target = entry
                    .target
                    .as_ref()
                    .ok_or_else(|| format!("{source}: a JSON 6902 patch needs a `target`"))?;
                let matched = matching(resources, target);
                if matched.is_empty() {
                    return Err(format!("{source}: the patch target matches no resource"));
                }
                for index in matched {
                    json6902(&mut resources[index].object, ops)
                        .map_err(|e| format!("{source}: {} {e}", resources[index].object_ref()))?;
                }
            }
            Value::Object(_) => {
                let derived;
                let target = match &entry.target {
                    Some(target) => target,
                    None => {
                        derived = target_of(&document);
                        &derived
                    }
                };
                let matched = matching(resources, target);
                if matched.is_empty() {
                    return Err(format!("{source}: the patch matches no resource"));
                }
                for index in matched {
                    let resource = &mut resources[index];
                    let strategic = kinds::lookup(resource.api_version(), resource.kind())
                        .is_some_and(|k| k.typed.is_some());
                    merge(&mut resource.object, &document, strategic, "")?;
                }
            }
            _ => {
                return Err(format!(
                    "{source}: a patch is a map or a list of operations"
                ));
            }
        }
    }
    Ok(())
}

/// The target of a strategic-merge patch without `target`: its own kind and name.
fn target_of(patch: &Value) -> Target {
    let api_version = patch["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), api_version.to_owned()),
    };
    Target {
        group: Some(group),
        version: Some(version),
        kind: patch["kind"].as_str().map(str::to_owned),
        name: patch["metadata"]["name"].as_str().map(str::to_owned),
        namespace: patch["metadata"]["namespace"].as_str().map(str::to_owned),
    }
}

fn matching(resources: &[Manifest], target: &Target) -> Vec<usize> {
    let matches = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    resources
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            let version = r.api_version().rsplit('/').next().unwrap_or_default();
            matches(&target.group, r.group())
                && matches(&target.version, version)
                && matches(&target.kind, r.kind())
                && matches(&target.name, r.name())
                && matches(&target.namespace, r.namespace().unwrap_or_default())
        })
        .map(|(i, _)| i)
        .collect()
}

/// Merge keys of the lists the subset merges (see the module documentation).
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let key = match field {
        "containers" | "initContainers" | "env" | "volumes" | "imagePullSecrets" => "name",
        "volumeMounts" => "mountPath",
        "ports" => "containerPort",
        _ => return None,
    };
    items.iter().all(|i| !i[key].is_null()).then_some(key)
}

fn merge(target: &mut Value, patch: &Value, strategic: bool, field: &str) -> Result<(), String> {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if key.starts_with('$') {
                    return Err(format!(
                        "the strategic-merge directive {key} is not supported"
                    ));
                }
                if value.is_null() {
                    target.remove(key);
                } else if let Some(existing) = target.get_mut(key) {
                    merge(existing, value, strategic, key)?;
                } else {
                    target.insert(key.clone(), value.clone());
                }
            }
        }
        (Value::Array(target), Value::Array(patch)) if strategic => {
            let Some(key) = merge_key(field, target).filter(|k| merge_key(field, patch) == Some(k))
            else {
                *target = patch.clone();
                return Ok(());
            };
            for item in patch {
                match target.iter_mut().find(|t| t[key] == item[key]) {
                    Some(existing) => merge(existing, item, strategic, field)?,
                    None => target.push(item.clone()),
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
    Ok(())
}

fn json6902(object: &mut Value, ops: &[Value]) -> Result<(), String> {
    for op in ops {
        let path = op["path"].as_str().ok_or("an operation without `path`")?;
        match op["op"].as_str() {
            Some("replace") => {
                let slot = object
                    .pointer_mut(path)
                    .ok_or_else(|| format!("replace: {path} does not exist"))?;
                *slot = op["value"].clone();
            }
            Some("add") => add(object, path, op["value"].clone())?,
            Some("remove") => remove(object, path)?,
            Some("test") => {
                if object.pointer(path) != Some(&op["value"]) {
                    return Err(format!("test failed at {path}"));
                }
            }
            other => return Err(format!("unsupported JSON patch op {other:?}")),
        }
    }
    Ok(())
}

fn split_pointer(path: &str) -> Result<(&str, String), String> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("bad pointer {path}"))?;
    Ok((parent, last.replace("~1", "/").replace("~0", "~")))
}

fn add(object: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let (parent, last) = split_pointer(path)?;
    match object.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(last, value);
        }
        Some(Value::Array(items)) if last == "-" => items.push(value),
        Some(Value::Array(items)) => {
            let index: usize = last.parse().map_err(|_| format!("bad index in {path}"))?;
            if index > items.len() {
                return Err(format!("add: {path} is past the end"));
            }
            items.insert(index, value);
        }
        _ => return Err(format!("add: parent of {path} does not exist")),
    }
    Ok(())
}

fn remove(object: &mut Value, path: &str) -> Result<(), String> {
    let (parent, last) = split_pointer(path)?;
    let removed = match object.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&last).is_some(),
        Some(Value::Array(items)) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    };
    if removed {
        Ok(())
    } else {
        Err(format!("remove: {path} does not exist"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn strategic_merge_merges_containers_by_name_and_replaces_other_lists() {
        let mut deployment = json!({"spec": {"template": {"spec": {
            "containers": [{"name": "a", "image": "x", "args": ["1", "2"]}, {"name": "b", "image": "y"}],
            "tolerations": [{"key": "k1"}]
        }}}});
        let patch = json!({"spec": {"template": {"spec": {
            "containers": [{"name": "b", "image": "z", "args": ["3"]}],
            "tolerations": [{"key": "k2"}]
        }}}});
        merge(&mut deployment, &patch, true, "").unwrap();
        let spec = &deployment["spec"]["template"]["spec"];
        assert_eq!(spec["containers"][0]["image"], "x");
        assert_eq!(spec["containers"][1]["image"], "z");
        assert_eq!(spec["containers"][1]["args"], json!(["3"]));
        assert_eq!(spec["tolerations"], json!([{"key": "k2"}]));
    }

    #[test]
    fn json_merge_on_custom_resources_replaces_lists() {
        let mut object = json!({"spec": {"containers": [{"name": "a", "image": "x"}], "n": 1}});
        merge(
            &mut object,
            &json!({"spec": {"containers": [{"name": "a"}], "n": null}}),
            false,
            "",
        )
        .unwrap();
        assert_eq!(object, json!({"spec": {"containers": [{"name": "a"}]}}));
    }

    #[test]
    fn json6902_replace_add_remove() {
        let mut object = json!({"spec": {"list": [1, 2], "x": 1}});
        json6902(
            &mut object,
            &[
                json!({"op": "replace", "path": "/spec/x", "value": 2}),
                json!({"op": "add", "path": "/spec/list/-", "value": 3}),
                json!({"op": "remove", "path": "/spec/list/0"}),
                json!({"op": "add", "path": "/spec/a~1b", "value": true}),
            ],
        )
        .unwrap();
        assert_eq!(
            object,
            json!({"spec": {"list": [2, 3], "x": 2, "a/b": true}})
        );
        let err = json6902(
            &mut object,
            &[json!({"op": "replace", "path": "/spec/nope", "value": 1})],
        );
        assert_eq!(err.unwrap_err(), "replace: /spec/nope does not exist");
    }
}
