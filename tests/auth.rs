//! Authentication and tenant isolation over a real gRPC connection: API keys, roles,
//! tenant scoping of every RPC, resume tokens across tenants, open health and
//! reflection, the secure-by-default listen rule and the shipped `examples/secure.toml`.

mod common;

use call_outcome::auth::{ApiKeyConfig, AuthConfig, Role, hash_key};
use call_outcome::config::{Config, parse_file};
use call_outcome::proto as pb;
use call_outcome::server::RunningServer;
use common::*;
use pb::subscribe_outcomes_response::Kind;
use std::path::Path;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

const SECURE_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/secure.toml");

fn key(name: &str, secret: &str, tenant: &str, roles: &[Role]) -> ApiKeyConfig {
    ApiKeyConfig {
        name: name.into(),
        sha256: hash_key(secret),
        tenant: tenant.into(),
        roles: roles.to_vec(),
    }
}

fn auth_config() -> Config {
    Config {
        auth: AuthConfig {
            enabled: true,
            api_keys: vec![
                key("acme", "acme-key", "acme", &[Role::Report, Role::Subscribe]),
                key("globex", "globex-key", "globex", &[Role::Admin]),
                key("acme-reporter", "acme-report-only", "acme", &[Role::Report]),
            ],
            ..AuthConfig::default()
        },
        ..Config::default()
    }
}

fn from_oldest() -> pb::SubscribeOutcomesRequest {
    pb::SubscribeOutcomesRequest {
        start: pb::StartPosition::Oldest as i32,
        ..Default::default()
    }
}

async fn next_event(stream: &mut Streaming<pb::SubscribeOutcomesResponse>) -> pb::OutcomeEvent {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a message within 30 s")
            .expect("stream open")
            .expect("message ok");
        if let Some(Kind::Event(e)) = msg.kind {
            return e;
        }
    }
}

#[tokio::test]
async fn missing_or_wrong_credentials_are_unauthenticated() {
    let server = start_with(auth_config()).await;
    let mut client = client(&server).await;
    let status = client
        .report_outcome(report(outcome("a", 1, "+15550100001", 486)))
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = report_as(&mut client, "not-a-key", "", "a", 486)
        .await
        .expect_err("bad token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let mut r = tonic::Request::new(classify(outcome("a", 1, "+15550100001", 486)));
    r.metadata_mut().insert(
        "authorization",
        "Basic YWNtZS1rZXk=".parse().expect("ascii"),
    );
    let status = client.classify(r).await.expect_err("wrong scheme");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = client
        .subscribe_outcomes(from_oldest())
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn a_key_acts_only_for_its_tenant() {
    let server = start_with(auth_config()).await;
    let mut client = client(&server).await;
    report_as(&mut client, "acme-key", "acme", "a1", 486)
        .await
        .expect("acme into acme");
    report_as(&mut client, "acme-key", "", "a2", 486)
        .await
        .expect("acme, tenant left empty");
    let status = report_as(&mut client, "acme-key", "globex", "a3", 486)
        .await
        .expect_err("acme into globex");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = client
        .classify(with_token(
            pb::ClassifyRequest {
                outcome: Some(outcome("a", 1, "+15550100001", 486)),
                tenant: "globex".into(),
            },
            "acme-key",
        ))
        .await
        .expect_err("classify for globex");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // Admin of globex is still only globex.
    let status = report_as(&mut client, "globex-key", "acme", "g1", 486)
        .await
        .expect_err("globex admin into acme");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn roles_are_enforced() {
    let server = start_with(auth_config()).await;
    let mut client = client(&server).await;
    report_as(&mut client, "acme-report-only", "", "r1", 486)
        .await
        .expect("reporter reports");
    let status = client
        .subscribe_outcomes(with_token(from_oldest(), "acme-report-only"))
        .await
        .expect_err("reporter cannot subscribe");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // Admin implies subscribe.
    client
        .subscribe_outcomes(with_token(from_oldest(), "globex-key"))
        .await
        .expect("admin subscribes");
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn subscribers_see_only_their_tenant_and_tokens_do_not_cross() {
    let server = start_with(auth_config()).await;
    let mut client = client(&server).await;
    report_as(&mut client, "globex-key", "", "globex-1", 603)
        .await
        .expect("globex reports");
    report_as(&mut client, "acme-key", "", "acme-1", 603)
        .await
        .expect("acme reports");
    report_as(&mut client, "globex-key", "", "globex-2", 603)
        .await
        .expect("globex reports");
    report_as(&mut client, "acme-key", "", "acme-2", 603)
        .await
        .expect("acme reports");

    let mut acme = client
        .subscribe_outcomes(with_token(from_oldest(), "acme-key"))
        .await
        .expect("acme subscribes")
        .into_inner();
    let first = next_event(&mut acme).await;
    let second = next_event(&mut acme).await;
    let ids: Vec<String> = [&first, &second].iter().map(|e| format!("{e:?}")).collect();
    assert!(
        ids[0].contains("acme-1") && !ids[0].contains("globex"),
        "{ids:?}"
    );
    assert!(
        ids[1].contains("acme-2") && !ids[1].contains("globex"),
        "{ids:?}"
    );

    // acme's resume token is refused to globex.
    let stolen = pb::SubscribeOutcomesRequest {
        resume_token: first.resume_token.clone(),
        ..Default::default()
    };
    let code = match client
        .subscribe_outcomes(with_token(stolen, "globex-key"))
        .await
    {
        Err(status) => status.code(),
        Ok(response) => {
            let mut stream = response.into_inner();
            match tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .expect("an answer")
            {
                Some(Err(status)) => status.code(),
                other => panic!("globex got {other:?}"),
            }
        }
    };
    assert_eq!(code, Code::PermissionDenied);
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn health_and_reflection_need_no_token() {
    let server = start_with(auth_config()).await;
    let channel = Channel::from_shared(server.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "calloutcome.v1.CallOutcomeService".into(),
        })
        .await
        .expect("health without a token")
        .into_inner();
    assert_eq!(
        r.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let mut v1 =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut stream = v1
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection without a token")
        .into_inner();
    let response = stream.next().await.expect("one response").expect("ok");
    assert!(format!("{response:?}").contains("calloutcome.v1.CallOutcomeService"));
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn public_listen_without_auth_is_refused_unless_explicitly_allowed() {
    let mut config = Config {
        listen: "0.0.0.0:0".parse().expect("addr"),
        ..Config::default()
    };
    let err = config.validate().expect_err("public without auth");
    let msg = err.to_string();
    assert!(msg.contains("allow_insecure_public_listen"), "{msg}");
    assert!(msg.contains("auth.enabled"), "{msg}");
    let err = RunningServer::start(config.clone())
        .await
        .expect_err("refuses to start");
    assert!(err.to_string().contains("allow_insecure_public_listen"));

    config.allow_insecure_public_listen = true;
    config.validate().expect("escape hatch");
    let config = Config {
        listen: "0.0.0.0:50051".parse().expect("addr"),
        ..auth_config()
    };
    config.validate().expect("public with auth");
    let config = Config {
        listen: "[::1]:50051".parse().expect("addr"),
        ..Config::default()
    };
    config.validate().expect("loopback without auth");
}

#[test]
fn bad_auth_entries_are_config_errors() {
    let mut config = auth_config();
    config.auth.api_keys[0].sha256 = "abc".into();
    assert!(
        config
            .validate()
            .expect_err("bad hex")
            .to_string()
            .contains("sha256")
    );
    let mut config = auth_config();
    config.auth.api_keys[1].sha256 = hash_key("acme-key");
    assert!(
        config
            .validate()
            .expect_err("duplicate")
            .to_string()
            .contains("twice")
    );
    let mut config = auth_config();
    config.auth.api_keys[0].tenant = "../etc".into();
    assert!(
        config
            .validate()
            .expect_err("tenant")
            .to_string()
            .contains("tenant")
    );
    let text = "[auth]\nenabled = true\n[[auth.api_keys]]\nname = \"x\"\nsha256 = \"00\"\ntenant = \"t\"\nroles = [\"root\"]\n";
    let err = parse_file(text, Path::new("a.toml")).expect_err("unknown role");
    assert!(err.to_string().contains("a.toml:"), "{err}");
}

#[test]
fn the_secure_example_loads_and_holds_the_demo_keys_hashed() {
    let config = Config::load(Some(Path::new(SECURE_EXAMPLE))).expect("example loads");
    assert!(config.auth.enabled);
    let text = std::fs::read_to_string(SECURE_EXAMPLE).expect("read");
    for (secret, tenant) in [("acme-demo-key", "acme"), ("globex-demo-key", "globex")] {
        let hash = hash_key(secret);
        assert!(text.contains(&hash), "{secret} not in the example");
        let entry = config
            .auth
            .api_keys
            .iter()
            .find(|k| k.sha256 == hash)
            .expect("entry");
        assert_eq!(entry.tenant, tenant);
        assert_eq!(entry.roles.len(), 3);
        // Only the hash is stored; the key appears in a comment only.
        assert!(!text.contains(&format!("\"{secret}\"")));
    }
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_call-outcome"))
        .args(["check-config", SECURE_EXAMPLE])
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_call-outcome"))
        .args(["hash-key", "acme-demo-key"])
        .output()
        .expect("runs");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        hash_key("acme-demo-key")
    );
}

fn example_config() -> Config {
    let text = std::fs::read_to_string(SECURE_EXAMPLE).expect("read");
    parse_file(&text, Path::new(SECURE_EXAMPLE)).expect("parses")
}

#[tokio::test]
async fn the_cli_reports_with_a_demo_token() {
    let server = start_with(example_config()).await;
    let url = server.url();
    let run = |token: Option<&'static str>, tenant: &'static str| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_call-outcome"));
            cmd.env_remove("CALL_OUTCOME_TOKEN").args([
                "report",
                "--server",
                url.as_str(),
                "--call-id",
                "cli-auth-1",
                "--to",
                "+15550104477",
                "--sip-code",
                "486",
                "--tenant",
                tenant,
                "--json",
            ]);
            if let Some(token) = token {
                cmd.args(["--token", token]);
            }
            cmd.output().expect("runs")
        })
    };
    let ok = run(Some("acme-demo-key"), "acme").await.expect("join");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let none = run(None, "").await.expect("join");
    assert!(!none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("Unauthenticated"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
    let cross = run(Some("acme-demo-key"), "globex").await.expect("join");
    assert!(
        String::from_utf8_lossy(&cross.stderr).contains("PermissionDenied"),
        "{}",
        String::from_utf8_lossy(&cross.stderr)
    );
    // The environment variable works as --token does.
    let url2 = server.url();
    let env = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_call-outcome"))
            .env("CALL_OUTCOME_TOKEN", "globex-demo-key")
            .args([
                "report",
                "--server",
                url2.as_str(),
                "--call-id",
                "cli-auth-2",
                "--to",
                "+15550104477",
                "--sip-code",
                "486",
            ])
            .output()
            .expect("runs")
    })
    .await
    .expect("join");
    assert!(
        env.status.success(),
        "{}",
        String::from_utf8_lossy(&env.stderr)
    );
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn the_cli_subscriber_sees_only_its_tenant() {
    use std::io::{BufRead, BufReader};
    let server = start_with(example_config()).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_call-outcome"))
        .env_remove("CALL_OUTCOME_TOKEN")
        .args([
            "subscribe",
            "--server",
            &server.url(),
            "--token",
            "globex-demo-key",
            "--max-events",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("subscribe runs");
    let stdout = child.stdout.take().expect("stdout");
    let (line_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    wait_for_subscribers(&server, 1).await;
    let mut client = client(&server).await;
    report_as(&mut client, "acme-demo-key", "", "acme-secret-call", 603)
        .await
        .expect("acme reports");
    report_as(&mut client, "globex-demo-key", "", "globex-call", 603)
        .await
        .expect("globex reports");
    let line = tokio::time::timeout(Duration::from_secs(30), lines.recv())
        .await
        .expect("a line within 30 s")
        .expect("a line");
    assert!(line.contains("globex-call"), "{line}");
    assert!(!line.contains("acme"), "{line}");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("exits");
    assert!(status.success());
    server.stop().await.expect("stops");
}
