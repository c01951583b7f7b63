//! The commit-status request matches the Gitea API as its own OpenAPI spec describes it.

use raibid_forge::{CommitStatus, StatusState, status_request};
use raibid_model::Forge;
use raibid_testkit::fixtures::{gitea_swagger as spec, json_type};

const STATUS_PATH: &str = "/repos/{owner}/{repo}/statuses/{sha}";
const SHA: &str = "29be01c073851cf0db0c6a466e396b725a670453";

fn status(state: StatusState) -> CommitStatus {
    CommitStatus {
        state,
        target_url: Some("https://ci.example/jobs/01J0".into()),
        description: "d".repeat(300),
        context: "raibid-ci/push".into(),
    }
}

#[test]
fn body_matches_create_status_option() {
    let spec = spec();
    let schema = &spec["definitions"]["CreateStatusOption"];
    assert_eq!(schema["type"], "object");
    let properties = schema["properties"].as_object().unwrap();
    let state_enum = properties["state"]["enum"].as_array().unwrap();
    for state in [
        StatusState::Pending,
        StatusState::Success,
        StatusState::Failure,
        StatusState::Error,
    ] {
        for forge in [Forge::Gitea, Forge::Forgejo] {
            let request = status_request(
                forge,
                "https://git.example",
                "owner/repo",
                SHA,
                &status(state),
            )
            .unwrap();
            let body = request.body.as_object().unwrap();
            assert_eq!(body.len(), 4, "every field is sent: {body:?}");
            for (key, value) in body {
                let property = properties
                    .get(key)
                    .unwrap_or_else(|| panic!("{key} is not a CreateStatusOption property"));
                assert_eq!(property["type"], json_type(value), "{key}");
            }
            assert!(state_enum.contains(&body["state"]), "{:?}", body["state"]);
            for required in schema["required"].as_array().into_iter().flatten() {
                assert!(body.contains_key(required.as_str().unwrap()), "{required}");
            }
        }
    }
}

#[test]
fn url_is_the_create_status_operation() {
    let spec = spec();
    let operation = &spec["paths"][STATUS_PATH]["post"];
    assert_eq!(operation["operationId"], "repoCreateStatus");
    let parameters = operation["parameters"].as_array().unwrap();
    let in_path: Vec<_> = parameters
        .iter()
        .filter(|p| p["in"] == "path")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(in_path, ["owner", "repo", "sha"]);
    let body = parameters.iter().find(|p| p["in"] == "body").unwrap();
    assert_eq!(body["schema"]["$ref"], "#/definitions/CreateStatusOption");

    let base = "https://git.example/sub";
    let request = status_request(
        Forge::Gitea,
        base,
        "Test-CI/multi-line-secrets",
        SHA,
        &status(StatusState::Pending),
    )
    .unwrap();
    assert_eq!(request.method.as_str().to_ascii_lowercase(), "post");
    let expected = format!(
        "{base}{}{}",
        spec["basePath"].as_str().unwrap(),
        STATUS_PATH
            .replace("{owner}", "Test-CI")
            .replace("{repo}", "multi-line-secrets")
            .replace("{sha}", SHA)
    );
    assert_eq!(request.url, expected);
}

#[test]
fn github_uses_the_same_path_without_the_api_prefix() {
    let request = status_request(
        Forge::Github,
        "https://api.github.com/",
        "Codertocat/Hello-World",
        SHA,
        &status(StatusState::Failure),
    )
    .unwrap();
    assert_eq!(request.method, http::Method::POST);
    let expected = format!(
        "https://api.github.com{}",
        STATUS_PATH
            .replace("{owner}", "Codertocat")
            .replace("{repo}", "Hello-World")
            .replace("{sha}", SHA)
    );
    assert_eq!(request.url, expected);
    assert_eq!(request.body["state"], "failure");
    assert_eq!(request.body["description"].as_str().unwrap().len(), 140);
}
