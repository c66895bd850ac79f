//! A dead OTLP endpoint changes nothing for clients: every request is answered. This
//! binary installs the process-wide tracing subscriber, so it holds this one test only.

mod common;

use call_outcome::LogFormat;
use call_outcome::OtlpSettings;

#[tokio::test]
async fn requests_are_answered_while_the_collector_is_unreachable() {
    // A port nobody listens on: bind, note it, close it.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let guard = call_outcome::init_telemetry(
        LogFormat::Text,
        "warn",
        &OtlpSettings {
            traces: true,
            metrics: false,
            traces_endpoint: Some(format!("http://{dead}")),
        },
    )
    .expect("telemetry");
    let server = common::start().await;
    let mut client = common::client(&server).await;
    for i in 0..200 {
        let r = client
            .report_outcome(common::report(common::outcome(
                &format!("dead-{i}"),
                1,
                "+15550104477",
                486,
            )))
            .await
            .expect("answered despite the dead collector")
            .into_inner();
        assert!(!r.duplicate);
    }
    // Exports keep failing in the background; flushing fails too, but returns.
    tokio::task::spawn_blocking(move || guard.flush())
        .await
        .expect("flush returns");
    server.stop().await.expect("stop");
}
