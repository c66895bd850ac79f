//! Traces reach an OTLP collector and continue the caller's trace; a provider callback has
//! its own `webhook` span with the pipeline's spans as children. The collector is the
//! opentelemetry-proto TraceService, served by tonic in this test. This binary installs
//! the process-wide tracing subscriber, so it holds this one test only.

mod common;

use call_outcome::LogFormat;
use call_outcome::OtlpSettings;
use call_outcome::proto as pb;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

struct Collector(mpsc::UnboundedSender<Span>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let _ = self.0.send(span);
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn spans_continue_the_callers_trace_and_carry_the_outcome() {
    // The collector.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let collector_addr = listener.local_addr().expect("addr");
    let (tx, mut spans) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let guard = call_outcome::init_telemetry(
        LogFormat::Text,
        "info",
        &OtlpSettings {
            traces: true,
            metrics: false,
            traces_endpoint: Some(format!("http://{collector_addr}")),
        },
    )
    .expect("telemetry");

    // With a webhook listener: a callback's span is checked after the RPC's.
    let config = call_outcome::config::Config::from_toml_str(
        "[webhooks]\nlisten = \"127.0.0.1:0\"\n[webhooks.tenants.default.twilio]\nauth_tokens = [\"tok\"]\n",
        std::path::Path::new("otlp.toml"),
    )
    .expect("config");
    let server = common::start_with(config).await;
    let mut client = common::client(&server).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_span = "00f067aa0ba902b7";
    let mut request = tonic::Request::new(common::report(common::outcome(
        "traced-1",
        1,
        "+15550104477",
        603,
    )));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_span}-01")
            .parse()
            .expect("ascii"),
    );
    let response = client
        .report_outcome(request)
        .await
        .expect("report")
        .into_inner();
    assert_eq!(
        response.classification.map(|c| c.category()),
        Some(pb::Category::Declined)
    );

    // Export now instead of waiting for the batch timer.
    let guard = tokio::task::spawn_blocking(move || {
        guard.flush();
        guard
    })
    .await
    .expect("flush");

    let mut by_name: HashMap<String, Span> = HashMap::new();
    let wanted = [
        "calloutcome.v1.CallOutcomeService/ReportOutcome",
        "classify",
        "store.claim",
        "store.record",
        "policy.decide",
        "events.publish",
    ];
    while !wanted.iter().all(|w| by_name.contains_key(*w)) {
        let span = tokio::time::timeout(Duration::from_secs(30), spans.recv())
            .await
            .unwrap_or_else(|_| panic!("spans missing after 30 s; got {:?}", by_name.keys()))
            .expect("collector open");
        by_name.insert(span.name.clone(), span);
    }

    let rpc = &by_name["calloutcome.v1.CallOutcomeService/ReportOutcome"];
    assert_eq!(hex(&rpc.trace_id), trace_id, "the caller's trace continues");
    assert_eq!(
        hex(&rpc.parent_span_id),
        parent_span,
        "the caller's span is the parent"
    );
    assert_eq!(rpc.kind, 2, "SPAN_KIND_SERVER");
    let attrs = attributes(rpc);
    assert_eq!(attrs.get("rpc.system").map(String::as_str), Some("grpc"));
    assert_eq!(
        attrs.get("rpc.service").map(String::as_str),
        Some("calloutcome.v1.CallOutcomeService")
    );
    assert_eq!(
        attrs.get("rpc.method").map(String::as_str),
        Some("ReportOutcome")
    );
    assert_eq!(
        attrs.get("rpc.grpc.status_code").map(String::as_str),
        Some("0")
    );
    assert_eq!(
        attrs.get("outcome.category").map(String::as_str),
        Some("declined")
    );
    assert_eq!(
        attrs.get("outcome.sip_code").map(String::as_str),
        Some("603")
    );
    assert_eq!(
        attrs.get("decision.action").map(String::as_str),
        Some("stop")
    );
    assert_eq!(attrs.get("trace_id").map(String::as_str), Some(trace_id));

    for child in &wanted[1..] {
        let span = &by_name[*child];
        assert_eq!(
            hex(&span.trace_id),
            trace_id,
            "{child} is in the caller's trace"
        );
    }
    // Classification runs inside the RPC span; store and publish in the report task,
    // which continues it.
    assert_eq!(by_name["classify"].parent_span_id, rpc.span_id);
    assert_eq!(by_name["store.record"].parent_span_id, rpc.span_id);
    assert_eq!(by_name["events.publish"].parent_span_id, rpc.span_id);

    // A provider callback: one `webhook` server span with the provider, tenant, event
    // and result, and the pipeline's spans as its children.
    let hooks = server.webhooks_addr.expect("webhook listener");
    let path = "/v1/webhooks/twilio/default";
    let body =
        "CallSid=CA-otlp&CallStatus=failed&SipResponseCode=603&SequenceNumber=2&To=%2B15550104477";
    let params = call_outcome::CallbackParams(
        form_urlencoded::parse(body.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    );
    let signature =
        call_outcome::auth::webhook::sign::twilio("tok", &format!("http://{hooks}{path}"), &params);
    let answer = common::post(
        hooks,
        path,
        "application/x-www-form-urlencoded",
        &[("X-Twilio-Signature", signature)],
        body.as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let guard = tokio::task::spawn_blocking(move || {
        guard.flush();
        guard
    })
    .await
    .expect("flush");
    let mut seen: Vec<Span> = Vec::new();
    let (webhook, publish) = loop {
        let found = seen.iter().find(|s| s.name == "webhook").and_then(|w| {
            seen.iter()
                .find(|s| s.name == "events.publish" && s.parent_span_id == w.span_id)
                .map(|p| (w.clone(), p.clone()))
        });
        if let Some(found) = found {
            break found;
        }
        let span = tokio::time::timeout(Duration::from_secs(30), spans.recv())
            .await
            .expect("the webhook's spans within 30 s")
            .expect("collector open");
        seen.push(span);
    };
    assert_eq!(webhook.kind, 2, "SPAN_KIND_SERVER");
    let attrs = attributes(&webhook);
    for (key, value) in [
        ("provider", "twilio"),
        ("tenant", "default"),
        ("event", "failed"),
        ("result", "accepted"),
        ("outcome.category", "declined"),
        ("decision.action", "stop"),
    ] {
        assert_eq!(
            attrs.get(key).map(String::as_str),
            Some(value),
            "{key}: {attrs:?}"
        );
    }
    assert_eq!(publish.trace_id, webhook.trace_id);

    server.stop().await.expect("stop");
    drop(guard);
}
