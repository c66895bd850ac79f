//! Shared helpers: an in-process server on 127.0.0.1:0 and a connected client.
#![allow(dead_code)]

use call_outcome::config::Config;
use call_outcome::proto as pb;
use call_outcome::proto::call_outcome_service_client::CallOutcomeServiceClient;
use call_outcome::server::RunningServer;
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
