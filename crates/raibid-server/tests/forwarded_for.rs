//! A reverse proxy left out of `server.trusted_proxies` makes all its clients one client for
//! the per-client limits; the server says so in its log, once per such peer.

mod support;

use support::{TestServer, config};

const WARNING: &str = "sent X-Forwarded-For but is not in server.trusted_proxies";

#[tokio::test]
async fn a_proxy_that_is_not_trusted_is_named_in_the_log_once() {
    let logs = support::capture_logs(tracing::Level::INFO);
    let warnings = || logs.text().matches(WARNING).count();

    // Trusted: the header is what it should be, nothing to say.
    let mut trusting = config();
    trusting.server.trusted_proxies = vec![raibid_config::IpRange::parse("127.0.0.1").unwrap()];
    let trusted = TestServer::start_with(trusting).await;
    let forwarded = |server: &TestServer, path: &str| {
        server
            .client
            .get(server.url(path))
            .header("x-forwarded-for", "198.51.100.7")
            .send()
    };
    assert!(
        forwarded(&trusted, "/healthz")
            .await
            .unwrap()
            .status()
            .is_success()
    );
    assert_eq!(warnings(), 0, "{}", logs.text());

    // Not trusted: named once, however many requests and whatever they ask for.
    let server = TestServer::start().await;
    assert!(server.get("/healthz").await.status().is_success());
    assert_eq!(
        warnings(),
        0,
        "a request without the header: {}",
        logs.text()
    );
    for path in ["/healthz", "/api/v1/jobs", "/no/such/page"] {
        forwarded(&server, path).await.unwrap();
    }
    assert_eq!(warnings(), 1, "{}", logs.text());
    let line = logs
        .text()
        .lines()
        .find(|l| l.contains(WARNING))
        .unwrap()
        .to_owned();
    assert!(
        line.contains("WARN") && line.contains("127.0.0.1"),
        "{line}"
    );
}
