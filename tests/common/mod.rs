//! Shared helpers: an in-process server on 127.0.0.1:0 and a connected client.
#![allow(dead_code)]

use call_outcome::config::Config;
use call_outcome::proto as pb;
use call_outcome::proto::call_outcome_service_client::CallOutcomeServiceClient;
use call_outcome::server::RunningServer;
use std::net::SocketAddr;
use tonic::transport::Channel;

pub async fn start() -> RunningServer {
    start_with(Config::default()).await
}

pub async fn start_with(mut config: Config) -> RunningServer {
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin_listen = "127.0.0.1:0".into();
    RunningServer::start(config).await.expect("server starts")
}

pub async fn client(server: &RunningServer) -> CallOutcomeServiceClient<Channel> {
    CallOutcomeServiceClient::connect(server.url())
        .await
        .expect("client connects")
}

pub fn sip(code: i32) -> Option<pb::SipResponse> {
    Some(pb::SipResponse {
        code: Some(code),
        ..Default::default()
    })
}

pub fn outcome(call_id: &str, attempt: u32, to: &str, code: i32) -> pb::CallOutcome {
    pb::CallOutcome {
        call_id: call_id.into(),
        attempt,
        to: to.into(),
        sip: sip(code),
        ..Default::default()
    }
}

pub fn report(outcome: pb::CallOutcome) -> pb::ReportOutcomeRequest {
    pb::ReportOutcomeRequest {
        outcome: Some(outcome),
        tenant: String::new(),
    }
}

pub fn classify(outcome: pb::CallOutcome) -> pb::ClassifyRequest {
    pb::ClassifyRequest {
        outcome: Some(outcome),
        tenant: String::new(),
    }
}

/// A minimal HTTP/1.1 GET: status code and body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Waits until the server's `/metrics` shows `n` open subscriptions (bounded).
pub async fn wait_for_subscribers(server: &RunningServer, n: u64) {
    let admin = server.admin_addr.expect("admin listener");
    let wanted = format!("calloutcome_active_subscribers {n}");
    for _ in 0..3000 {
        let (_, body) = get(admin, "/metrics").await;
        if body.lines().any(|l| l.trim() == wanted) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("never saw {wanted}");
}

/// `message` with `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

/// Reports SIP `code` for `call_id` (attempt 1) as the holder of `token`, into `tenant`
/// (empty: the identity's own).
pub async fn report_as(
    client: &mut CallOutcomeServiceClient<Channel>,
    token: &str,
    tenant: &str,
    call_id: &str,
    code: i32,
) -> Result<pb::ReportOutcomeResponse, tonic::Status> {
    let mut r = report(outcome(call_id, 1, "+15550100001", code));
    r.tenant = tenant.into();
    client
        .report_outcome(with_token(r, token))
        .await
        .map(tonic::Response::into_inner)
}

/// An HTTP/1.1 response: status, header block, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("JSON body: {self:?}"))
    }
}

/// A raw HTTP/1.1 request, so that the request line and body are exactly what a test
/// says (no client re-encoding anything).
pub async fn send_raw(addr: SocketAddr, request: &[u8]) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line in {text:?}"));
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

pub async fn post(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Answer {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    send_raw(addr, &bytes).await
}
