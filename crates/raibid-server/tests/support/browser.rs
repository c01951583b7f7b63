//! A browser on the web pages: forms posted from where a browser says they come from, and
//! signing in with an API token.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

/// A browser that does not follow redirects, to see where the server sends it.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Where a form comes from, as a browser says it.
#[derive(Clone, Copy)]
pub enum From {
    /// `Sec-Fetch-Site: same-origin`: a form of the server's own pages.
    Here,
    /// Only an `Origin` header, as older browsers send.
    Origin(&'static str),
    /// `Sec-Fetch-Site: cross-site`: another site's form.
    Elsewhere,
    /// Neither: not a browser's form.
    Nowhere,
}

/// Status, headers and body of a form posted to `path`.
pub async fn post_form(
    server: &super::TestServer,
    path: &str,
    cookie: Option<&str>,
    from: From,
    form: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let mut request = browser().post(server.url(path)).form(form);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request = match from {
        From::Here => request.header("sec-fetch-site", "same-origin"),
        From::Origin(origin) => request.header("origin", origin),
        From::Elsewhere => request.header("sec-fetch-site", "cross-site"),
        From::Nowhere => request,
    };
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// Signs in with `token`; the cookie to send back (`raibid_session=...`).
pub async fn sign_in(server: &super::TestServer, token: &str) -> String {
    let (status, headers, body) =
        post_form(server, "/login", None, From::Here, &[("token", token)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    cookie_set(&headers)
}

/// [`sign_in`] from a browser that calls itself `user_agent`.
pub async fn sign_in_from(server: &super::TestServer, token: &str, user_agent: &str) -> String {
    let response = browser()
        .post(server.url("/login"))
        .header("sec-fetch-site", "same-origin")
        .header("user-agent", user_agent)
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    cookie_set(response.headers())
}

/// The cookie a response sets, as a browser sends it back.
fn cookie_set(headers: &HeaderMap) -> String {
    let set = headers["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

/// `GET path` with a cookie: status and body.
pub async fn get_with(
    server: &super::TestServer,
    path: &str,
    cookie: &str,
) -> (StatusCode, String) {
    let response = browser()
        .get(server.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

/// The job whose page a form's redirect (`303`, `Location: /jobs/<id>`) leads to.
pub async fn job_redirected_to(
    server: &super::TestServer,
    (status, headers, body): (StatusCode, HeaderMap, String),
) -> raibid_model::Job {
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let id = headers["location"]
        .to_str()
        .unwrap()
        .strip_prefix("/jobs/")
        .expect("a job's page")
        .to_owned();
    server.queue.get(&id).await.unwrap().expect("the job")
}
