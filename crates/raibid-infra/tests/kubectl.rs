//! Cross-check of the built-in Kustomize subset against the real thing: every kustomization in
//! infra/ rendered by `kubectl kustomize` and by raibid must give the same objects. kubectl is
//! not packaged by Debian, so where it is missing the test says so and checks nothing else.

use std::path::Path;
use std::process::Command;

use raibid_infra::{Manifest, Tree, parse_documents, render_as_is};

fn kubectl() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
}

fn sorted(mut objects: Vec<Manifest>) -> Vec<(String, serde_json::Value)> {
    objects.sort_by_key(|m| m.object_ref());
    objects
        .into_iter()
        .map(|m| (m.object_ref().to_string(), m.object))
        .collect()
}

#[test]
fn builtin_kustomize_matches_kubectl_kustomize() {
    let Some(kubectl) = kubectl() else {
        println!(
            "kubectl is not installed (Debian does not package it), so the built-in Kustomize \
             subset is not cross-checked here; the other tests still validate its output"
        );
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra");
    let tree = Tree::embedded();
    let targets = tree.kustomization_dirs();
    for target in &targets {
        let output = Command::new(&kubectl)
            .arg("kustomize")
            .arg(root.join(target))
            .output()
            .expect("run kubectl kustomize");
        assert!(
            output.status.success(),
            "kubectl kustomize infra/{target}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).unwrap();
        let theirs: Vec<Manifest> = parse_documents(target, &text)
            .unwrap()
            .into_iter()
            .map(|o| Manifest::new(target.clone(), o))
            .collect();
        let ours = render_as_is(&tree, target).unwrap();
        let (theirs, ours) = (sorted(theirs), sorted(ours));
        let names = |v: &[(String, serde_json::Value)]| {
            v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names(&ours), names(&theirs), "objects of infra/{target}");
        for ((name, a), (_, b)) in ours.iter().zip(&theirs) {
            assert_eq!(
                a, b,
                "infra/{target}: {name} differs from kubectl's rendering"
            );
        }
    }
    println!(
        "{} kustomizations render identically with kubectl",
        targets.len()
    );
}
