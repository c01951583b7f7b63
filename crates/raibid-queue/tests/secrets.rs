//! Repository secrets against a real redis-server: sealed at rest, opened only with the key
//! they were sealed with.

use std::time::Duration;

use raibid_model::{Event, SecretScope};
use raibid_queue::{
    MAX_SECRETS_PER_REPO, OpenedSecret, Queue, QueueError, QueueOptions, SecretsKey, Unopenable,
};
use raibid_testkit::RedisServer;

const KEY: &str = "0123456789abcdefghijklmnopqrstuvwxyz";

fn repo(name: &str) -> SecretScope {
    SecretScope::Repo(name.to_owned())
}

fn owner(name: &str) -> SecretScope {
    SecretScope::Owner(name.to_owned())
}

/// A plain connection, to look at what the queue stored.
async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn keys(conn: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(conn)
        .await
        .unwrap()
}

fn queue(redis: &RedisServer, key: Option<&str>) -> Queue {
    let mut o = QueueOptions::new(redis.url());
    o.command_timeout = Duration::from_secs(2);
    o.secrets_key = key.map(|k| SecretsKey::derive(k).unwrap());
    Queue::open(o).unwrap()
}

#[tokio::test]
async fn secrets_are_sealed_in_redis_and_open_for_the_repository() {
    let redis = RedisServer::start();
    let q = queue(&redis, Some(KEY));
    let (listed, created) = q
        .set_secret(
            &repo("acme/app"),
            "DEPLOY_KEY",
            "hunter2-deploy",
            &[Event::Tag, Event::Push],
            &[],
        )
        .await
        .unwrap();
    assert!(created);
    assert_eq!(listed.events, [Event::Push, Event::Tag]);
    let (_, created) = q
        .set_secret(&repo("acme/app"), "DEPLOY_KEY", "hunter3-deploy", &[], &[])
        .await
        .unwrap();
    assert!(!created, "a second set replaces the value");
    q.set_secret(
        &repo("acme/app"),
        "NPM_TOKEN",
        "npm-123456",
        &[Event::Push],
        &[],
    )
    .await
    .unwrap();

    // Nothing in Redis holds a value in the clear.
    let mut conn = raw(&redis).await;
    let keys = keys(&mut conn, "*").await;
    for key in &keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        for value in ["hunter3-deploy", "npm-123456"] {
            assert!(
                !dump.windows(value.len()).any(|w| w == value.as_bytes()),
                "{key} holds {value}"
            );
        }
    }

    let names: Vec<String> = q
        .secrets(&repo("ACME/App"))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(
        names,
        ["DEPLOY_KEY", "NPM_TOKEN"],
        "repository names ignore case"
    );

    // An agent with the same key opens them; the repository's name is compared ignoring case.
    let agent = queue(&redis, Some(KEY));
    let opened = agent.open_secrets("Acme/App").await.unwrap();
    assert_eq!(
        opened["DEPLOY_KEY"].opened,
        Ok(OpenedSecret {
            value: "hunter3-deploy".into(),
            events: vec![],
            branches: vec![],
        })
    );
    assert_eq!(
        opened["DEPLOY_KEY"].scope,
        repo("Acme/App"),
        "as the job names it"
    );
    assert_eq!(
        opened["NPM_TOKEN"].opened.as_ref().unwrap().events,
        [Event::Push]
    );
    assert!(agent.open_secrets("acme/other").await.unwrap().is_empty());

    assert!(
        q.delete_secret(&repo("acme/app"), "NPM_TOKEN")
            .await
            .unwrap()
    );
    assert!(
        !q.delete_secret(&repo("acme/app"), "NPM_TOKEN")
            .await
            .unwrap()
    );
    assert_eq!(q.secrets(&repo("acme/app")).await.unwrap().len(), 1);
}

#[tokio::test]
async fn without_the_key_secrets_are_neither_set_nor_opened() {
    let redis = RedisServer::start();
    let keyless = queue(&redis, None);
    let err = keyless
        .set_secret(&repo("acme/app"), "TOKEN", "value-1234", &[], &[])
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::SecretsOff), "{err}");
    assert!(err.to_string().contains("redis.secrets_key"), "{err}");

    queue(&redis, Some(KEY))
        .set_secret(&repo("acme/app"), "TOKEN", "value-1234", &[], &[])
        .await
        .unwrap();
    // Listing needs no key: names and events are not sealed.
    assert_eq!(keyless.secrets(&repo("acme/app")).await.unwrap().len(), 1);
    assert_eq!(
        keyless.open_secrets("acme/app").await.unwrap()["TOKEN"].opened,
        Err(Unopenable::NoKey)
    );
    let other = queue(&redis, Some(&KEY.replace('0', "!")));
    let err = other.open_secrets("acme/app").await.unwrap()["TOKEN"]
        .opened
        .clone()
        .unwrap_err();
    assert!(matches!(err, Unopenable::OtherKey { .. }), "{err}");
}

#[tokio::test]
async fn a_value_moved_in_redis_does_not_open() {
    let redis = RedisServer::start();
    let q = queue(&redis, Some(KEY));
    q.set_secret(
        &repo("acme/app"),
        "TOKEN",
        "value-1234",
        &[Event::Push],
        &[],
    )
    .await
    .unwrap();
    let mut conn = raw(&redis).await;
    let keys = keys(&mut conn, "*secrets:acme/app").await;
    let sealed: String = redis::cmd("HGET")
        .arg(&keys[0])
        .arg("TOKEN")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Copied to another repository, or its events widened, it no longer opens.
    let other_repo = keys[0].replace("acme/app", "evil/app");
    let _: () = redis::cmd("HSET")
        .arg(&other_repo)
        .arg("TOKEN")
        .arg(&sealed)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        q.open_secrets("evil/app").await.unwrap()["TOKEN"].opened,
        Err(Unopenable::Damaged)
    );
    let widened = sealed.replace(r#""events":["push"],"#, "");
    assert_ne!(widened, sealed);
    let _: () = redis::cmd("HSET")
        .arg(&keys[0])
        .arg("TOKEN")
        .arg(&widened)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        q.open_secrets("acme/app").await.unwrap()["TOKEN"].opened,
        Err(Unopenable::Damaged)
    );
}

#[tokio::test]
async fn a_repository_holds_a_bounded_number_of_secrets() {
    let redis = RedisServer::start();
    let q = queue(&redis, Some(KEY));
    for i in 0..MAX_SECRETS_PER_REPO {
        q.set_secret(&repo("acme/app"), &format!("S{i}"), "value-1234", &[], &[])
            .await
            .unwrap();
    }
    let err = q
        .set_secret(&repo("acme/app"), "ONE_MORE", "value-1234", &[], &[])
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::TooManySecrets { .. }), "{err}");
    // Replacing one is still possible, and another repository has its own bound.
    q.set_secret(&repo("acme/app"), "S0", "value-5678", &[], &[])
        .await
        .unwrap();
    q.set_secret(&repo("acme/lib"), "ONE_MORE", "value-1234", &[], &[])
        .await
        .unwrap();
    let err = q
        .set_secret(&repo("acme/app"), "S1", "", &[], &[])
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::InvalidSecret(_)), "{err}");
}

#[tokio::test]
async fn an_owners_secrets_reach_all_its_repositories_under_their_own() {
    let redis = RedisServer::start();
    let q = queue(&redis, Some(KEY));
    q.set_secret(&owner("acme"), "REGISTRY_TOKEN", "org-registry-1", &[], &[])
        .await
        .unwrap();
    q.set_secret(
        &owner("acme"),
        "DEPLOY_KEY",
        "org-deploy-1",
        &[Event::Tag],
        &[],
    )
    .await
    .unwrap();
    q.set_secret(&repo("acme/app"), "DEPLOY_KEY", "app-deploy-1", &[], &[])
        .await
        .unwrap();

    let app = q.open_secrets("acme/app").await.unwrap();
    assert_eq!(app["REGISTRY_TOKEN"].scope, owner("acme"));
    assert_eq!(
        app["REGISTRY_TOKEN"].opened.as_ref().unwrap().value,
        "org-registry-1"
    );
    // The repository's own wins over its owner's.
    assert_eq!(app["DEPLOY_KEY"].scope, repo("acme/app"));
    assert_eq!(
        app["DEPLOY_KEY"].opened.as_ref().unwrap().value,
        "app-deploy-1"
    );
    let lib = q.open_secrets("ACME/lib").await.unwrap();
    assert_eq!(
        lib["DEPLOY_KEY"].opened.as_ref().unwrap().value,
        "org-deploy-1"
    );
    assert_eq!(
        lib["DEPLOY_KEY"].opened.as_ref().unwrap().events,
        [Event::Tag]
    );
    assert!(q.open_secrets("other/app").await.unwrap().is_empty());

    // Listed and deleted apart from the repositories'.
    assert_eq!(q.secrets(&owner("Acme")).await.unwrap().len(), 2);
    assert_eq!(q.secrets(&repo("acme/app")).await.unwrap().len(), 1);
    assert!(q.delete_secret(&owner("acme"), "DEPLOY_KEY").await.unwrap());
    let lib = q.open_secrets("acme/lib").await.unwrap();
    assert!(!lib.contains_key("DEPLOY_KEY"));
}

/// Rotating `redis.secrets_key`: with the old key among the previous ones, values sealed with
/// it still open, and resealing moves them to the new key, after which the old one can go.
#[tokio::test]
async fn secrets_survive_a_key_rotation() {
    const NEW: &str = "the-new-secrets-key-of-32-characters-or-more";
    let redis = RedisServer::start();
    let old = queue(&redis, Some(KEY));
    old.set_secret(
        &repo("Acme/App"),
        "TOKEN",
        "value-1234",
        &[Event::Push],
        &[],
    )
    .await
    .unwrap();
    old.set_secret(&owner("acme"), "ORG", "org-value-1", &[], &[])
        .await
        .unwrap();
    // Sealed with a key nobody has any more: counted, left alone.
    queue(&redis, Some(&KEY.replace('a', "!")))
        .set_secret(&repo("acme/app"), "LOST", "lost-value-1", &[], &[])
        .await
        .unwrap();

    let mut options = QueueOptions::new(redis.url());
    options.secrets_key = Some(SecretsKey::derive(NEW).unwrap());
    options.secrets_previous_keys = vec![SecretsKey::derive(KEY).unwrap()];
    let rotating = Queue::open(options).unwrap();
    let opened = rotating.open_secrets("acme/app").await.unwrap();
    assert_eq!(opened["TOKEN"].opened.as_ref().unwrap().value, "value-1234");
    assert_eq!(opened["ORG"].opened.as_ref().unwrap().value, "org-value-1");

    let report = rotating.reseal_secrets().await.unwrap();
    assert_eq!((report.resealed, report.unopenable), (2, 1));
    let again = rotating.reseal_secrets().await.unwrap();
    assert_eq!(
        (again.resealed, again.unopenable),
        (0, 1),
        "nothing left to move"
    );

    // Only the new key now: both open, with their events kept.
    let new_only = queue(&redis, Some(NEW));
    let opened = new_only.open_secrets("acme/app").await.unwrap();
    assert_eq!(opened["TOKEN"].opened.as_ref().unwrap().value, "value-1234");
    assert_eq!(
        opened["TOKEN"].opened.as_ref().unwrap().events,
        [Event::Push]
    );
    assert_eq!(opened["ORG"].opened.as_ref().unwrap().value, "org-value-1");
    assert!(matches!(
        opened["LOST"].opened,
        Err(Unopenable::OtherKey { .. })
    ));
    // The old key alone no longer opens them.
    let old_only = old.open_secrets("acme/app").await.unwrap();
    assert!(old_only["TOKEN"].opened.is_err());
}
