//! The admin listener: /metrics is scraped and parsed and its counters move as reports
//! arrive; /healthz and /readyz answer; gRPC health is served there too.

mod common;

use common::get;

use call_outcome::proto as pb;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Parses the Prometheus text format into `name{labels}` → value, labels sorted.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        let value: f64 = value.parse().expect("number");
        let key = match series.split_once('{') {
            Some((name, labels)) => {
                let mut pairs: Vec<&str> = labels
                    .trim_end_matches('}')
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .collect();
                pairs.sort_unstable();
                format!("{name}{{{}}}", pairs.join(","))
            }
            None => series.to_owned(),
        };
        out.insert(key, value);
    }
    out
}

async fn metrics(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    parse(&body)
}

fn value(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_as_reports_arrive() {
    let server = common::start().await;
    let admin = server.admin_addr.expect("admin listener");
    let mut client = common::client(&server).await;

    let declined =
        r#"calloutcome_outcomes_total{action="stop",category="declined",sip_class="6xx"}"#;
    let busy =
        r#"calloutcome_outcomes_total{action="retry_later",category="busy",sip_class="4xx"}"#;
    let before = metrics(admin).await;
    assert_eq!(value(&before, declined), 0.0);

    for i in 0..3 {
        client
            .report_outcome(common::report(common::outcome(
                &format!("m-{i}"),
                1,
                &format!("+1555010{i:04}"),
                603,
            )))
            .await
            .expect("report");
    }
    client
        .report_outcome(common::report(common::outcome(
            "m-busy",
            1,
            "+15550109000",
            486,
        )))
        .await
        .expect("report");
    // A duplicate and an invalid request.
    client
        .report_outcome(common::report(common::outcome(
            "m-busy",
            1,
            "+15550109000",
            486,
        )))
        .await
        .expect("duplicate");
    client
        .report_outcome(common::report(common::outcome(
            "m-bad",
            1,
            "+15550109000",
            180,
        )))
        .await
        .expect_err("invalid");
    let _subscription = client
        .subscribe_outcomes(pb::SubscribeOutcomesRequest::default())
        .await
        .expect("subscribe");

    let after = metrics(admin).await;
    assert_eq!(value(&after, declined), 3.0, "{after:#?}");
    assert_eq!(value(&after, busy), 1.0);
    assert_eq!(value(&after, "calloutcome_duplicates_total"), 1.0);
    assert_eq!(
        value(
            &after,
            r#"calloutcome_invalid_requests_total{rpc_method="ReportOutcome"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            r#"calloutcome_decisions_total{action="stop",rule="declined"}"#
        ),
        3.0
    );
    assert_eq!(value(&after, "calloutcome_events_published_total"), 4.0);
    assert_eq!(value(&after, "calloutcome_active_subscribers"), 1.0);
    assert_eq!(
        value(
            &after,
            r#"calloutcome_rpc_duration_seconds_count{grpc_code="OK",rpc_method="ReportOutcome"}"#
        ),
        5.0
    );
    assert_eq!(
        value(
            &after,
            r#"calloutcome_rpc_duration_seconds_count{grpc_code="INVALID_ARGUMENT",rpc_method="ReportOutcome"}"#
        ),
        1.0
    );
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn health_and_readiness_answer_over_http_and_grpc() {
    let server = common::start().await;
    let admin = server.admin_addr.expect("admin listener");
    assert_eq!(get(admin, "/healthz").await.0, 200);
    let (status, body) = get(admin, "/readyz").await;
    assert_eq!((status, body.trim()), (200, "ready"));
    assert_eq!(get(admin, "/nope").await.0, 404);

    // Kubernetes' native gRPC probes use the plaintext admin port.
    let channel = tonic::transport::Channel::from_shared(format!("http://{admin}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "calloutcome.v1.CallOutcomeService".into(),
        })
        .await
        .expect("health over the admin port")
        .into_inner()
        .status();
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    server.stop().await.expect("stop");
}

/// `[metrics] carrier_label`: outcomes are counted per configured carrier, any other
/// value (or none) as `other`, so decline and answer rates per carrier are one query.
#[tokio::test]
async fn outcomes_are_counted_per_configured_carrier() {
    let config = call_outcome::config::Config::from_toml_str(
        "[metrics]\ncarrier_label = \"carrier\"\ncarrier_values = [\"att\", \"verizon\"]\n",
        std::path::Path::new("m.toml"),
    )
    .expect("config");
    let server = common::start_with(config).await;
    let admin = server.admin_addr.expect("admin listener");
    let mut client = common::client(&server).await;
    let send = |call: &str, code: i32, carrier: Option<&str>| {
        // A destination each: the history of one would change the decisions.
        let to = format!(
            "+1555010{:04}",
            call.len() * 7 + call.bytes().map(usize::from).sum::<usize>()
        );
        let mut outcome = common::outcome(call, 1, &to, code);
        if let Some(c) = carrier {
            outcome.labels.insert("carrier".into(), c.into());
        }
        common::report(outcome)
    };
    for (call, code, carrier) in [
        ("c-1", 603, Some("att")),
        ("c-2", 603, Some("att")),
        ("c-3", 486, Some("verizon")),
        ("c-4", 486, Some("unlisted-carrier")),
        ("c-5", 486, None),
    ] {
        client
            .report_outcome(send(call, code, carrier))
            .await
            .expect("report");
    }
    let m = metrics(admin).await;
    let key = |carrier: &str, action: &str, category: &str, class: &str| {
        format!(
            r#"calloutcome_outcomes_total{{action="{action}",carrier="{carrier}",category="{category}",sip_class="{class}"}}"#
        )
    };
    assert_eq!(value(&m, &key("att", "stop", "declined", "6xx")), 2.0);
    assert_eq!(
        value(&m, &key("verizon", "retry_later", "busy", "4xx")),
        1.0
    );
    assert_eq!(value(&m, &key("other", "retry_later", "busy", "4xx")), 2.0);
    assert!(
        !m.keys().any(|k| k.contains("unlisted-carrier")),
        "an unlisted value never becomes a series"
    );
    server.stop().await.expect("stop");
}

#[test]
fn carrier_settings_are_checked_at_load() {
    for (text, needle) in [
        (
            "[metrics]\ncarrier_label = \"Carrier-Name\"\ncarrier_values = [\"a\"]\n",
            "metric label name",
        ),
        (
            "[metrics]\ncarrier_label = \"action\"\ncarrier_values = [\"a\"]\n",
            "already a label",
        ),
        (
            "[metrics]\ncarrier_label = \"carrier\"\n",
            "1 to 256 values",
        ),
        (
            "[metrics]\ncarrier_label = \"carrier\"\ncarrier_values = [\"a\", \"a\"]\n",
            "listed twice",
        ),
        (
            "[metrics]\ncarrier_values = [\"a\"]\n",
            "needs metrics.carrier_label",
        ),
    ] {
        let e = call_outcome::config::Config::from_toml_str(text, std::path::Path::new("m.toml"))
            .expect_err(text)
            .to_string();
        assert!(e.contains(needle), "{needle} in {e}");
    }
}

/// `calloutcome_policy_info{version}` shows the live policy, and a report's decision
/// carries that version.
#[tokio::test]
async fn the_live_policy_version_is_a_metric_and_on_every_decision() {
    let server = common::start().await;
    let admin = server.admin_addr.expect("admin listener");
    let mut client = common::client(&server).await;
    let response = client
        .report_outcome(common::report(common::outcome(
            "pv-1",
            1,
            "+15550100077",
            603,
        )))
        .await
        .expect("report")
        .into_inner();
    let version = response.decision.expect("decision").policy_version;
    assert_eq!(version.len(), 12, "{version}");
    let m = metrics(admin).await;
    assert_eq!(
        value(
            &m,
            &format!(r#"calloutcome_policy_info{{version="{version}"}}"#)
        ),
        1.0,
        "{m:?}"
    );
    server.stop().await.expect("stop");
}
