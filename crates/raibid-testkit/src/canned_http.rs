//! An HTTP server on loopback that answers with responses written out in full, in turn: for a
//! client's side of the wire where no real peer can say what the test needs said (a 503, a
//! 429 with `Retry-After`, then the answer).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A full HTTP/1.1 response closing its connection: `status` with `content_type` and `body`,
/// and `headers` (`"retry-after: 1"`) before them.
pub fn http_response(status: u16, content_type: &str, headers: &[&str], body: &str) -> String {
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    let mut head = format!("HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\n");
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    format!(
        "{head}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Starts the server: it answers its requests with `responses` in turn (the last from then on),
/// one per connection, once each request's head has arrived. Returns its base URL and how many
/// requests it has answered so far.
pub async fn answering(responses: Vec<String>) -> (String, Arc<AtomicUsize>) {
    assert!(!responses.is_empty(), "a server needs something to answer");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    let asked = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&asked);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            let response = responses[n.min(responses.len() - 1)].clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, asked)
}
