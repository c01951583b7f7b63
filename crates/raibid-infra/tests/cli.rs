//! `raibid infra render|validate` as the binary calls them.

use raibid_config::Config;
use raibid_infra::{InfraCommand, InfraError, Tree, parse_documents, render, run_infra_to};

async fn run(command: InfraCommand, config: &Config) -> (Result<(), InfraError>, String) {
    let mut out = Vec::new();
    let result = run_infra_to(command, config, &mut out).await;
    (result, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn render_prints_what_setup_applies() {
    let mut config = Config::default();
    config.redis.stream_name = "jobs".into();
    let command = InfraCommand::Render {
        target: "dev".into(),
        as_is: false,
        infra_dir: None,
    };
    let (result, text) = run(command, &config).await;
    result.unwrap();
    let printed = parse_documents("stdout", &text).unwrap();
    let expected: Vec<_> = render(&Tree::embedded(), "dev", &config)
        .unwrap()
        .into_iter()
        .map(|m| m.object)
        .collect();
    assert_eq!(printed, expected);
    assert!(text.contains("stream: jobs:arm64"));
    assert!(
        text.starts_with("apiVersion: v1\nkind: Namespace\n"),
        "namespaces come first"
    );

    let command = InfraCommand::Render {
        target: "dev".into(),
        as_is: true,
        infra_dir: None,
    };
    let (_, as_is) = run(command, &config).await;
    assert!(as_is.contains("stream: ci-jobs:arm64"));
}

#[tokio::test]
async fn validate_checks_every_kustomization_and_notes_drift() {
    let (result, text) = run(
        InfraCommand::Validate {
            targets: Vec::new(),
            infra_dir: None,
        },
        &Config::default(),
    )
    .await;
    result.unwrap();
    assert!(text.contains("overlays/prod: 17 objects valid\n"), "{text}");
    assert!(!text.contains("note:"), "{text}");

    let mut config = Config::default();
    config.redis.consumer_group = "builders".into();
    let command = InfraCommand::Validate {
        targets: vec!["base/agents".into()],
        infra_dir: None,
    };
    let (result, text) = run(command, &config).await;
    result.unwrap();
    assert!(
        text.contains("note: your configuration changes 3 value(s) of the files"),
        "{text}"
    );
    assert!(text.contains(
        "base/agents/scaledjob-arm64.yaml: ScaledJob/raibid-agent-arm64 (namespace raibid-ci): \
         spec.triggers[0].metadata.consumerGroup: \"ci-workers\" in the file, \"builders\" with the configuration"
    ), "{text}");
}

#[tokio::test]
async fn validate_fails_on_an_edited_tree_and_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in Tree::embedded().files() {
        let target = dir.path().join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let text = if path == "base/agents/scaledjob-gpu.yaml" {
            text.replace("maxReplicaCount: 20", "maxReplicaCount: twenty")
        } else {
            text.to_owned()
        };
        std::fs::write(target, text).unwrap();
    }
    let command = InfraCommand::Validate {
        targets: vec!["base/agents".into()],
        infra_dir: Some(dir.path().to_path_buf()),
    };
    let (result, _) = run(command, &Config::default()).await;
    let err = result.unwrap_err().to_string();
    assert!(err.contains(
        "base/agents/scaledjob-gpu.yaml: ScaledJob/raibid-agent-gpu (namespace raibid-ci): spec.maxReplicaCount:"
    ), "{err}");
}

#[tokio::test]
async fn an_unknown_target_lists_the_known_ones() {
    let command = InfraCommand::Render {
        target: "staging".into(),
        as_is: false,
        infra_dir: None,
    };
    let (result, _) = run(command, &Config::default()).await;
    let err = result.unwrap_err().to_string();
    assert!(
        err.starts_with("no kustomization named \"staging\"; available: base/agents, base/redis"),
        "{err}"
    );
}
