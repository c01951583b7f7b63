//! A Kubernetes API server stand-in that answers `GET`s from recorded responses and applies
//! merge patches to the recorded objects (`raibid pool pause` annotates ScaledJobs).
//!
//! No API server can run where these tests run (k3s needs a kernel and privileges a build
//! sandbox does not give), so the code that reads a cluster is tested against the answers of
//! one: `tests/fixtures/k8s-api/<cluster>/`, held to the Kubernetes OpenAPI documents and the
//! KEDA CRD by raibid-infra's tests. The server does what a client can observe of the real
//! one for reads: list paths per group/version/namespace, label selectors, bearer-token
//! authentication, and `Status` objects for errors (404 for a group that is not installed,
//! which is how a client learns that KEDA or Flux is absent; 403 for paths a test marks
//! [`FakeKubeApi::forbid`]den, worded as the API server's RBAC authorizer words it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The bearer token the kubeconfig carries and the server requires.
pub const TOKEN: &str = "raibid-testkit-token";

/// The directory of recorded clusters in this repository.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/k8s-api")
}

struct Shared {
    /// `version` and `<prefix>_<resource>` (e.g. `api_v1_pods`, `apis_batch_v1_jobs`); merge
    /// patches change them.
    documents: Mutex<HashMap<String, Value>>,
    /// Each merge patch applied: the object's path and the patch.
    patches: Mutex<Vec<(String, Value)>>,
    requests: Mutex<Vec<String>>,
    down: AtomicBool,
    /// Paths every request to which gets 403, as for a kubeconfig without rights to them.
    forbidden: Mutex<Vec<String>>,
}

/// A running fake API server on a loopback port, with a kubeconfig that points at it. Stops
/// when dropped.
pub struct FakeKubeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    task: JoinHandle<()>,
}

impl FakeKubeApi {
    /// Serves the recorded cluster `name` (a directory under [`fixtures_dir`]). Needs a tokio
    /// runtime.
    pub async fn start(name: &str) -> Self {
        let dir = fixtures_dir().join(name);
        let mut documents = HashMap::new();
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("recorded cluster {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("readable fixture directory").path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let value: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            documents.insert(stem.to_owned(), value);
        }
        let shared = Arc::new(Shared {
            documents: Mutex::new(documents),
            patches: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            down: AtomicBool::new(false),
            forbidden: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("bound address");
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let tmp = tempfile::tempdir().expect("temporary directory");
        let kubeconfig = tmp.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_text(&format!("http://{addr}")))
            .expect("write kubeconfig");
        Self {
            addr,
            shared,
            kubeconfig,
            _dir: tmp,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig whose current context is this server, with [`TOKEN`].
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Every request so far, as `path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().expect("not poisoned").clone()
    }

    /// Every merge patch applied so far: the object's path and the patch.
    pub fn patches(&self) -> Vec<(String, Value)> {
        self.shared.patches.lock().expect("not poisoned").clone()
    }

    /// While down, every request gets 503 (an API server whose etcd is gone answers so).
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// From now on, every request to `path` (e.g.
    /// `/apis/rbac.authorization.k8s.io/v1/namespaces/raibid-ci/roles/raibid-server`) gets the
    /// 403 an API server answers a user without rights to it, whether or not the object exists
    /// (authorization comes first).
    pub fn forbid(&self, path: &str) {
        self.shared
            .forbidden
            .lock()
            .expect("not poisoned")
            .push(path.to_owned());
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn kubeconfig_text(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: recorded\n  cluster:\n    server: {server}\n\
         contexts:\n- name: recorded\n  context:\n    cluster: recorded\n    user: recorded\n\
         current-context: recorded\nusers:\n- name: recorded\n  user:\n    token: {TOKEN}\n"
    )
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {},
        "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    shared
        .requests
        .lock()
        .expect("not poisoned")
        .push(uri.to_string());
    if shared.down.load(Ordering::SeqCst) {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        );
    }
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    if !authorized {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let path = uri.path();
    let forbidden = shared
        .forbidden
        .lock()
        .expect("not poisoned")
        .iter()
        .any(|p| p == path);
    if forbidden {
        return forbidden_answer(&method, path);
    }
    let documents = shared.documents.lock().expect("not poisoned").clone();
    if path == "/version" {
        return match documents.get("version") {
            Some(v) => axum::Json(v.clone()).into_response(),
            None => not_found(path),
        };
    }
    if method == Method::PATCH {
        return patch(&shared, path, &headers, &body);
    }
    let Some(target) = ListTarget::parse(path) else {
        return not_found(path);
    };
    let Some(list) = documents.get(&target.document) else {
        return not_found(path);
    };
    let selector = match query.get("labelSelector").map(|s| Selector::parse(s)) {
        Some(Ok(selector)) => selector,
        Some(Err(term)) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("unable to parse requirement: {term}"),
            );
        }
        None => Selector::default(),
    };
    let mut list = list.clone();
    if let Some(items) = list["items"].as_array_mut() {
        items.retain(|item| {
            target
                .namespace
                .as_deref()
                .is_none_or(|ns| item["metadata"]["namespace"] == ns)
                && selector.matches(&item["metadata"]["labels"])
        });
    }
    axum::Json(list).into_response()
}

/// A JSON merge patch (RFC 7386) of one recorded object, `<list path>/<name>`, as
/// `kubectl annotate` and kube's `Patch::Merge` send it; the patched object is kept for later
/// requests and returned.
fn patch(shared: &Shared, path: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let merge = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/merge-patch+json"));
    if !merge {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "this fake API server applies merge patches only",
        );
    }
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the patch is not JSON",
        );
    };
    let Some((list_path, name)) = path.rsplit_once('/') else {
        return not_found(path);
    };
    let Some(target) = ListTarget::parse(list_path) else {
        return not_found(path);
    };
    let mut documents = shared.documents.lock().expect("not poisoned");
    let item = documents
        .get_mut(&target.document)
        .and_then(|list| list["items"].as_array_mut())
        .and_then(|items| {
            items.iter_mut().find(|item| {
                item["metadata"]["name"] == name
                    && target
                        .namespace
                        .as_deref()
                        .is_none_or(|ns| item["metadata"]["namespace"] == ns)
            })
        });
    let Some(item) = item else {
        return not_found(path);
    };
    merge_patch(item, &patch);
    shared
        .patches
        .lock()
        .expect("not poisoned")
        .push((path.to_owned(), patch));
    axum::Json(item.clone()).into_response()
}

/// RFC 7386: objects merge key by key, `null` removes a key, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let object = target.as_object_mut().expect("made an object above");
    for (key, value) in fields {
        if value.is_null() {
            object.remove(key);
        } else {
            merge_patch(object.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The user the 403s name: a deploy account without rights to RBAC objects.
const FORBIDDEN_USER: &str = "system:serviceaccount:raibid-ci:deployer";

/// A 403 as the API server's RBAC authorizer answers it, e.g. for a `DELETE` of a Role:
/// `roles.rbac.authorization.k8s.io "raibid-server" is forbidden: User "..." cannot delete
/// resource "roles" in API group "rbac.authorization.k8s.io" in the namespace "raibid-ci"`.
fn forbidden_answer(method: &Method, path: &str) -> Response {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _, rest @ ..] => ("", rest),
        ["apis", group, _, rest @ ..] => (*group, rest),
        _ => ("", &parts[..0]),
    };
    let (namespace, resource, name) = match rest {
        ["namespaces", ns, resource, name] => (Some(*ns), *resource, Some(*name)),
        ["namespaces", ns, resource] => (Some(*ns), *resource, None),
        [resource, name] => (None, *resource, Some(*name)),
        [resource] => (None, *resource, None),
        _ => (None, "", None),
    };
    let verb = match *method {
        Method::DELETE => "delete",
        Method::PATCH => "patch",
        Method::PUT => "update",
        Method::POST => "create",
        _ if name.is_some() => "get",
        _ => "list",
    };
    let qualified = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    let subject = match name {
        Some(name) => format!("{qualified} \"{name}\""),
        None => qualified.clone(),
    };
    let scope = match namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_owned(),
    };
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "{subject} is forbidden: User \"{FORBIDDEN_USER}\" cannot {verb} resource \
             \"{resource}\" in API group \"{group}\" {scope}"
        ),
        "reason": "Forbidden",
        "details": {"name": name.unwrap_or_default(), "group": group, "kind": resource},
        "code": 403,
    });
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

fn not_found(path: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("the server could not find the requested resource ({path})"),
    )
}

/// A list request: `/api/v1[/namespaces/NS]/RESOURCE` or
/// `/apis/GROUP/VERSION[/namespaces/NS]/RESOURCE`.
struct ListTarget {
    document: String,
    namespace: Option<String>,
}

impl ListTarget {
    fn parse(path: &str) -> Option<Self> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (prefix, rest) = match parts.as_slice() {
            ["api", version, rest @ ..] => (format!("api_{version}"), rest),
            ["apis", group, version, rest @ ..] => (format!("apis_{group}_{version}"), rest),
            _ => return None,
        };
        let (namespace, resource) = match rest {
            [resource] => (None, *resource),
            ["namespaces", ns, resource] => (Some((*ns).to_owned()), *resource),
            _ => return None,
        };
        Some(Self {
            document: format!("{prefix}_{resource}"),
            namespace,
        })
    }
}

/// Equality-based label selectors, as the API server reads them: `k=v`, `k==v`, `k!=v`, `k`,
/// `!k`, joined by commas.
#[derive(Default)]
struct Selector {
    terms: Vec<(String, Op)>,
}

enum Op {
    Equals(String),
    NotEquals(String),
    Exists,
    Absent,
}

impl Selector {
    fn parse(text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let parsed = if let Some((k, v)) = term.split_once("!=") {
                (k, Op::NotEquals(v.to_owned()))
            } else if let Some((k, v)) = term.split_once("==") {
                (k, Op::Equals(v.to_owned()))
            } else if let Some((k, v)) = term.split_once('=') {
                (k, Op::Equals(v.to_owned()))
            } else if let Some(k) = term.strip_prefix('!') {
                (k, Op::Absent)
            } else {
                (term, Op::Exists)
            };
            if parsed.0.is_empty() || parsed.0.contains(char::is_whitespace) {
                return Err(term.to_owned());
            }
            terms.push((parsed.0.to_owned(), parsed.1));
        }
        Ok(Self { terms })
    }

    fn matches(&self, labels: &Value) -> bool {
        self.terms.iter().all(|(key, op)| {
            let value = labels.get(key).and_then(Value::as_str);
            match op {
                Op::Equals(v) => value == Some(v.as_str()),
                Op::NotEquals(v) => value != Some(v.as_str()),
                Op::Exists => value.is_some(),
                Op::Absent => value.is_none(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_paths_name_their_recorded_document() {
        let t = ListTarget::parse("/api/v1/namespaces/raibid-ci/pods").unwrap();
        assert_eq!(t.document, "api_v1_pods");
        assert_eq!(t.namespace.as_deref(), Some("raibid-ci"));
        let t = ListTarget::parse("/apis/keda.sh/v1alpha1/namespaces/x/scaledjobs").unwrap();
        assert_eq!(t.document, "apis_keda.sh_v1alpha1_scaledjobs");
        let t = ListTarget::parse("/api/v1/nodes").unwrap();
        assert_eq!((t.document.as_str(), t.namespace), ("api_v1_nodes", None));
        assert!(ListTarget::parse("/api/v1/namespaces/x/pods/one/log").is_none());
        assert!(ListTarget::parse("/healthz").is_none());
    }

    #[test]
    fn merge_patches_follow_rfc_7386() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(
            &mut target,
            &json!({"a": "z", "c": {"f": null}, "n": {"m": 1}}),
        );
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}, "n": {"m": 1}}));
    }

    #[test]
    fn selectors_match_like_the_api_server() {
        let labels = json!({"app": "raibid", "tier": "agent"});
        let yes = [
            "app=raibid",
            "app==raibid,tier",
            "!missing",
            "tier!=server",
            "",
        ];
        for s in yes {
            assert!(Selector::parse(s).unwrap().matches(&labels), "{s}");
        }
        let no = ["app=gitea", "missing", "!tier", "app=raibid,tier!=agent"];
        for s in no {
            assert!(!Selector::parse(s).unwrap().matches(&labels), "{s}");
        }
        assert!(Selector::parse("a b").is_err());
    }
}
