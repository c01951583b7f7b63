//! The secrets page (`/secrets`): a signed-in token with the `secrets` scope lists, sets and
//! deletes a repository's or an owner's secrets through the API's handlers; values go in and
//! never come back; tokens without the scope, other repositories and other sites' forms are
//! refused with nothing changed.

mod support;

use std::time::Duration;

use raibid_config::{ApiToken, TokenHash, TokenScope, hash_token};
use raibid_model::SecretScope;
use raibid_queue::{QueueOptions, SecretsKey};
use raibid_testkit::RedisServer;
use reqwest::StatusCode;
use support::browser::{From, get_with, post_form, sign_in};
use support::{TOKEN, TestServer, config};

const KEY: &str = "a-secrets-key-of-at-least-32-characters";
const ADMIN: &str = "rbd_admin_token_for_acme_77";
const VALUE: &str = "dckr_pat_page_9Xk2mQ7wLp";

fn keyed_queue(redis: &RedisServer) -> raibid_queue::Queue {
    let mut options = QueueOptions::new(redis.url());
    options.command_timeout = Duration::from_secs(2);
    options.secrets_key = Some(SecretsKey::derive(KEY).unwrap());
    raibid_queue::Queue::open(options).unwrap()
}

/// `admin` sets acme's secrets only; `builder` (the suite's token) runs jobs and sets none.
async fn server() -> TestServer {
    let mut cfg = config();
    let token = |name: &str, secret: &str, scope: TokenScope, repos: &str| ApiToken {
        name: name.into(),
        hash: TokenHash::parse(&hash_token(secret)).unwrap(),
        scopes: vec![scope],
        repos: vec![repos.into()],
    };
    cfg.server.tokens = vec![
        token("builder", TOKEN, TokenScope::Jobs, "*"),
        token("admin", ADMIN, TokenScope::Secrets, "acme/*"),
    ];
    let redis = RedisServer::start();
    let queue = keyed_queue(&redis);
    TestServer::start_with_queue(redis, cfg, raibid_server::system_clock(), queue).await
}

async fn listed(server: &TestServer, scope: SecretScope) -> Vec<String> {
    let secrets = server.queue.secrets(&scope).await.unwrap();
    secrets.into_iter().map(|s| s.name).collect()
}

fn repo() -> SecretScope {
    SecretScope::Repo("acme/app".into())
}

#[tokio::test]
async fn a_secrets_token_lists_sets_and_deletes_secrets_whose_values_never_come_back() {
    let server = server().await;
    let admin = sign_in(&server, ADMIN).await;
    let set = |cookie: String, from: From, fields: Vec<(&'static str, String)>| {
        let server = &server;
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_form(server, "/secrets/set", Some(&cookie), from, &fields).await
        }
    };
    let deploy_key = || {
        vec![
            ("of", "acme/app".to_owned()),
            ("name", "DEPLOY_KEY".to_owned()),
            ("value", format!("{VALUE}\r\nsecond line")),
            ("event", "push".to_owned()),
            ("event", "tag".to_owned()),
            ("branches", "main\r\nrelease/*\r\n".to_owned()),
        ]
    };

    // The header links the page; the page asks whose secrets first.
    let (status, body) = get_with(&server, "/secrets", &admin).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("href=\"/secrets\">secrets</a>"), "{body}");
    assert!(!body.contains("Set a secret"), "{body}");
    let (status, body) = get_with(&server, "/secrets?of=acme/app", &admin).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("This repository has no secrets yet."),
        "{body}"
    );
    // A query that is not one is a page saying so, not a bare error.
    let (status, body) = get_with(&server, "/secrets?of=acme&of=acme/app", &admin).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("<title>400 Bad Request"), "{body}");
    assert!(body.contains("duplicate field"), "{body}");

    // Another site's form sets nothing.
    let (status, _, body) = set(admin.clone(), From::Elsewhere, deploy_key()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(listed(&server, repo()).await.is_empty());

    let (status, headers, body) = set(admin.clone(), From::Here, deploy_key()).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(headers["location"], "/secrets?of=acme%2Fapp");
    let (_, page) = get_with(&server, "/secrets?of=acme/app", &admin).await;
    assert!(page.contains("<code>DEPLOY_KEY</code>"), "{page}");
    assert!(
        page.contains("<td>push, tag</td><td>main, release/*</td>"),
        "{page}"
    );
    assert!(!page.contains(VALUE), "a value is never shown");
    // Sealed as typed, the browser's line ends made the step's.
    let opened = keyed_queue(&server.redis)
        .open_secrets("acme/app")
        .await
        .unwrap();
    let secret = opened["DEPLOY_KEY"].opened.as_ref().unwrap();
    assert_eq!(secret.value, format!("{VALUE}\nsecond line"));
    assert_eq!(secret.branches, ["main", "release/*"]);

    // An owner's secrets, which all of acme's repositories read.
    let (status, _, body) = set(
        admin.clone(),
        From::Here,
        vec![
            ("of", "acme".to_owned()),
            ("name", "ORG_TOKEN".to_owned()),
            ("value", "org-value".to_owned()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(
        listed(&server, SecretScope::Owner("acme".into())).await,
        ["ORG_TOKEN"]
    );
    let (_, page) = get_with(&server, "/secrets?of=acme", &admin).await;
    assert!(page.contains("<td>every event</td><td>any</td>"), "{page}");
    assert!(
        page.contains("Every repository of acme reads these"),
        "{page}"
    );

    // The API's checks, as its own pages: a bad name, a repository not the token's.
    let mut bad = deploy_key();
    bad[1].1 = "1BAD".into();
    let (status, _, body) = set(admin.clone(), From::Here, bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("1BAD"), "{body}");
    let mut elsewhere = deploy_key();
    elsewhere[0].1 = "other/app".into();
    let (status, _, body) = set(admin.clone(), From::Here, elsewhere).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = get_with(&server, "/secrets?of=other/app", &admin).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        listed(&server, SecretScope::Repo("other/app".into()))
            .await
            .is_empty()
    );

    // Delete: from elsewhere refused, then gone; an unknown one is 404.
    let delete = |from: From, name: &'static str| {
        let (server, admin) = (&server, admin.clone());
        async move {
            post_form(
                server,
                "/secrets/delete",
                Some(&admin),
                from,
                &[("of", "acme/app"), ("name", name)],
            )
            .await
        }
    };
    let (status, _, _) = delete(From::Nowhere, "DEPLOY_KEY").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(listed(&server, repo()).await, ["DEPLOY_KEY"]);
    let (status, headers, body) = delete(From::Here, "DEPLOY_KEY").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(headers["location"], "/secrets?of=acme%2Fapp");
    assert!(listed(&server, repo()).await.is_empty());
    let (status, _, body) = delete(From::Here, "DEPLOY_KEY").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn without_the_secrets_scope_there_is_no_page_link_or_form() {
    let server = server().await;
    // Nobody signed in is sent to sign in.
    let response = support::browser::browser()
        .get(server.url("/secrets?of=acme/app"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body = response.text().await.unwrap();
    assert!(body.contains(">Sign in</a>"), "{body}");

    let builder = sign_in(&server, TOKEN).await;
    let (status, body) = get_with(&server, "/secrets?of=acme/app", &builder).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("it needs the `secrets` scope"), "{body}");
    assert!(!body.contains("href=\"/secrets\""), "{body}");
    let (status, _, _) = post_form(
        &server,
        "/secrets/set",
        Some(&builder),
        From::Here,
        &[("of", "acme/app"), ("name", "X"), ("value", "v")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(listed(&server, repo()).await.is_empty());

    // A job's page links its repository's secrets for a token that may set them only.
    let submit = |repo: &'static str| {
        let server = &server;
        async move {
            let submitted = server
                .client
                .post(server.url("/api/v1/jobs"))
                .bearer_auth(TOKEN)
                .json(&serde_json::json!({
                    "repo": repo,
                    "clone_url": format!("https://git.example/{repo}.git"),
                    "sha": support::SHA
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(submitted.status(), StatusCode::CREATED);
            support::json(submitted).await["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let id = submit("acme/app").await;
    submit("other/tool").await;
    let link = "href=\"/secrets?of=acme%2Fapp\">Secrets</a>";
    let admin = sign_in(&server, ADMIN).await;
    let (_, page) = get_with(&server, &format!("/jobs/{id}"), &admin).await;
    assert!(page.contains(link), "{page}");
    let (_, page) = get_with(&server, &format!("/jobs/{id}"), &builder).await;
    assert!(!page.contains(link), "{page}");

    // The chooser suggests the repositories of recent jobs, and owners, the token may set.
    let (_, page) = get_with(&server, "/secrets", &admin).await;
    for offered in ["<option value=\"acme\">", "<option value=\"acme/app\">"] {
        assert!(page.contains(offered), "{offered} in {page}");
    }
    assert!(
        !page.contains("other/tool") && !page.contains("value=\"other\""),
        "{page}"
    );
}
