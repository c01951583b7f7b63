//! The repository's Containerfile, checked for structure (no base images can be pulled here, so
//! it is parsed rather than built): a musl build stage, a small runtime stage with what agents
//! need, and `raibid` as the entrypoint.

use std::path::Path;

/// One instruction: keyword and its arguments, continuation lines joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

fn parse(text: &str) -> Vec<Instruction> {
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(continued) = trimmed.strip_suffix('\\') {
            pending.push_str(continued);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (keyword, args) = pending
            .split_once(char::is_whitespace)
            .unwrap_or((&pending, ""));
        instructions.push(Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_owned(),
        });
        pending.clear();
    }
    assert!(pending.is_empty(), "dangling line continuation");
    instructions
}

/// Instructions grouped by stage; the first group holds what comes before the first FROM.
fn stages(instructions: &[Instruction]) -> Vec<&[Instruction]> {
    let starts: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, i)| i.keyword == "FROM")
        .map(|(n, _)| n)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &start)| &instructions[start..*starts.get(k + 1).unwrap_or(&instructions.len())])
        .collect()
}

#[test]
fn containerfile_builds_a_static_raibid_into_a_small_runtime_image() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Containerfile");
    let text = std::fs::read_to_string(&path).unwrap();
    let instructions = parse(&text);
    let known = [
        "FROM",
        "RUN",
        "COPY",
        "ARG",
        "ENV",
        "WORKDIR",
        "USER",
        "ENTRYPOINT",
        "CMD",
        "LABEL",
    ];
    for instruction in &instructions {
        assert!(
            known.contains(&instruction.keyword.as_str()),
            "unexpected {instruction:?}"
        );
    }
    let stages = stages(&instructions);
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");

    let (build, runtime) = (stages[0], stages[1]);
    let from = |stage: &[Instruction]| stage[0].args.clone();
    assert!(from(build).ends_with(" AS build"), "{}", from(build));
    assert!(from(runtime).ends_with(" AS runtime"), "{}", from(runtime));
    for stage in [build, runtime] {
        let image = from(stage).split_whitespace().next().unwrap().to_owned();
        assert!(
            image.starts_with("docker.io/library/"),
            "fully qualified base image: {image}"
        );
        assert!(
            image.contains(':') && !image.ends_with(":latest"),
            "pinned tag: {image}"
        );
    }

    let runs = |stage: &[Instruction]| -> String {
        stage
            .iter()
            .filter(|i| i.keyword == "RUN")
            .map(|i| i.args.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let build_runs = runs(build);
    assert!(build_runs.contains("musl-tools"));
    assert!(build_runs.contains(
        "cargo build --release --locked -p raibid-cli --target \"$(uname -m)-unknown-linux-musl\""
    ));
    let copies: Vec<&str> = build
        .iter()
        .filter(|i| i.keyword == "COPY")
        .map(|i| i.args.as_str())
        .collect();
    for needed in [
        "crates crates",
        "infra infra",
        "tests/fixtures/crds",
        "tests/fixtures/k8s-openapi",
    ] {
        assert!(
            copies.iter().any(|c| c.contains(needed)),
            "build stage copies {needed}"
        );
    }

    let runtime_runs = runs(runtime);
    for package in ["git", "bubblewrap", "buildah", "ca-certificates"] {
        assert!(
            runtime_runs.split_whitespace().any(|w| w == package),
            "runtime installs {package}"
        );
    }
    for binary in ["raibid", "raibid-agent"] {
        assert!(
            build_runs.contains(&format!("release/{binary}\" /{binary}")),
            "{build_runs}"
        );
        assert!(
            runtime.iter().any(|i| i.keyword == "COPY"
                && i.args == format!("--from=build /{binary} /usr/local/bin/{binary}")),
            "runtime holds {binary}"
        );
    }
    let last = |keyword: &str| {
        runtime
            .iter()
            .rev()
            .find(|i| i.keyword == keyword)
            .map(|i| i.args.clone())
    };
    assert_eq!(last("ENTRYPOINT").as_deref(), Some("[\"raibid\"]"));
    assert_eq!(
        last("USER").as_deref(),
        Some("10001"),
        "the server's runAsUser"
    );
    // The in-cluster agent.step_user has an account (ssh and git refuse a uid without one).
    assert!(
        runtime_runs.contains("useradd --uid 10002 --user-group"),
        "{runtime_runs}"
    );
    let env = last("ENV").unwrap();
    assert!(
        env.contains("BUILDAH_ISOLATION=chroot") && env.contains("STORAGE_DRIVER=vfs"),
        "{env}"
    );
}

#[test]
fn the_manifests_run_the_image_as_the_containerfile_expects() {
    let tree = raibid_infra::Tree::embedded();
    let objects = raibid_infra::render_as_is(&tree, "dev").unwrap();
    for object in &objects {
        let pod = match object.kind() {
            "Deployment" => &object.object["spec"]["template"]["spec"],
            "ScaledJob" => &object.object["spec"]["jobTargetRef"]["template"]["spec"],
            _ => continue,
        };
        let container = &pod["containers"][0];
        assert_eq!(
            container["image"],
            "localhost/raibid:0.1.0",
            "{}",
            object.name()
        );
        // The server runs `raibid server`, the agent pods the agent alone.
        let program = match object.kind() {
            "ScaledJob" => "raibid-agent",
            _ => "raibid",
        };
        assert_eq!(container["command"][0], program, "{}", object.name());
    }
    let server = objects.iter().find(|m| m.kind() == "Deployment").unwrap();
    assert_eq!(
        server.object["spec"]["template"]["spec"]["securityContext"]["runAsUser"],
        10001
    );
}
