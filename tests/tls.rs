//! TLS on the public port over real connections: serving and refusing plaintext, mutual
//! TLS (no certificate, a foreign CA, a certificate mapped to a tenant), certificate
//! reload without a restart (and a broken file keeping the last good one), `[tls]` in a
//! config file, and the CLI's TLS flags. Certificates are made in the test (rcgen).

// A client's own errors: the one-mapping rule (clippy.toml) is for the service.
#![allow(clippy::disallowed_methods)]

mod common;
#[path = "common/pki.rs"]
mod pki;

use call_outcome::auth::{ApiKeyConfig, AuthConfig, ClientCertConfig, Role, hash_key};
use call_outcome::config::Config;
use call_outcome::proto as pb;
use call_outcome::proto::call_outcome_service_client::CallOutcomeServiceClient;
use call_outcome::server::RunningServer;
use call_outcome::{ClientAuth, TlsConfig};
use common::*;
use pb::subscribe_outcomes_response::Kind;
use pki::{Ca, Pem, write};
use std::path::Path;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

type Client = CallOutcomeServiceClient<Channel>;

/// A TLS config over files in `dir`, re-read every 20 ms.
fn tls_files(dir: &Path, server: &Pem, client_ca: Option<&Ca>) -> TlsConfig {
    let mut tls = TlsConfig::new(
        write(dir, "tls.crt", &server.cert),
        write(dir, "tls.key", &server.key),
    );
    tls.client_ca_file = client_ca.map(|ca| write(dir, "ca.crt", &ca.pem()));
    tls.reload_interval = Duration::from_millis(20);
    tls
}

/// Connects over TLS trusting `ca`, with a client certificate when given.
async fn connect(
    server: &RunningServer,
    ca: &Ca,
    identity: Option<&Pem>,
) -> Result<Client, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert, &id.key));
    }
    Channel::from_shared(server.url())
        .expect("url")
        .tls_config(tls)?
        .connect()
        .await
        .map(CallOutcomeServiceClient::new)
}

/// One Classify call; `Err` carries the status of a failed connection or call.
async fn classify_once(
    client: Result<Client, tonic::transport::Error>,
) -> Result<(), tonic::Status> {
    let mut client = client.map_err(|e| tonic::Status::unavailable(format!("{e:?}")))?;
    client
        .classify(classify(outcome("c", 1, "+15550100001", 486)))
        .await
        .map(|_| ())
}

/// With TLS 1.3 a client learns that its certificate was refused only after its own
/// side of the handshake completed, so the refusal shows on connect or on the first call.
async fn assert_refused(client: Result<Client, tonic::transport::Error>, what: &str) {
    match classify_once(client).await {
        Ok(()) => panic!("{what}: the server served the call"),
        Err(status) => assert!(
            matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::Internal
            ),
            "{what}: {status:?}"
        ),
    }
}

#[tokio::test]
async fn tls_serves_and_plaintext_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("server CA");
    let server = start_with(Config {
        tls: Some(tls_files(dir.path(), &ca.server(), None)),
        ..Config::default()
    })
    .await;
    assert!(server.url().starts_with("https://"), "{}", server.url());
    classify_once(connect(&server, &ca, None).await)
        .await
        .expect("a TLS client is served");

    // Plaintext HTTP/2 against the TLS port never reaches the service.
    let plain = CallOutcomeServiceClient::connect(format!("http://{}", server.addr)).await;
    assert_refused(plain, "plaintext client").await;
    // A client that does not trust the server's CA refuses the server.
    let other = Ca::new("someone else");
    assert_refused(connect(&server, &other, None).await, "untrusted server").await;
    // Health stays reachable on the plaintext admin port.
    let (status, _) = get(server.admin_addr.expect("admin"), "/healthz").await;
    assert_eq!(status, 200);
    server.stop().await.expect("stops");
}

fn mtls_config(dir: &Path, server_ca: &Ca, client_ca: &Ca) -> Config {
    let cert = |name: &str, tenant: &str, uri: Option<&str>, cn: Option<&str>| ClientCertConfig {
        name: name.into(),
        subject_cn: cn.map(str::to_owned),
        san_dns: None,
        san_uri: uri.map(str::to_owned),
        tenant: tenant.into(),
        roles: vec![Role::Report, Role::Subscribe],
    };
    Config {
        tls: Some(tls_files(dir, &server_ca.server(), Some(client_ca))),
        auth: AuthConfig {
            enabled: true,
            api_keys: vec![ApiKeyConfig {
                name: "globex-key".into(),
                sha256: hash_key("globex-key"),
                tenant: "globex".into(),
                roles: vec![Role::Admin],
            }],
            client_certs: vec![
                cert("acme-dialer", "acme", Some("spiffe://acme/dialer"), None),
                cert("globex-dialer", "globex", None, Some("globex-dialer")),
            ],
            ..AuthConfig::default()
        },
        ..Config::default()
    }
}

async fn report_via(client: &mut Client, call_id: &str) -> Result<(), tonic::Status> {
    client
        .report_outcome(report(outcome(call_id, 1, "+15550100001", 603)))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn mutual_tls_maps_certificates_to_tenants() {
    let dir = tempfile::tempdir().expect("dir");
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let server = start_with(mtls_config(dir.path(), &server_ca, &client_ca)).await;
    assert!(server.tls.as_ref().expect("tls").client_cert_required());

    assert_refused(
        connect(&server, &server_ca, None).await,
        "no client certificate",
    )
    .await;
    let foreign = Ca::new("foreign CA").client("acme-dialer", Some("spiffe://acme/dialer"));
    assert_refused(
        connect(&server, &server_ca, Some(&foreign)).await,
        "a certificate from another CA",
    )
    .await;

    let acme_cert = client_ca.client("acme dialer 7", Some("spiffe://acme/dialer"));
    let globex_cert = client_ca.client("globex-dialer", None);
    let mut acme = connect(&server, &server_ca, Some(&acme_cert))
        .await
        .expect("acme connects");
    let mut globex = connect(&server, &server_ca, Some(&globex_cert))
        .await
        .expect("globex connects");
    report_via(&mut globex, "globex-1")
        .await
        .expect("globex reports");
    report_via(&mut acme, "acme-1")
        .await
        .expect("acme reports without a token");
    report_via(&mut globex, "globex-2")
        .await
        .expect("globex reports");
    report_via(&mut acme, "acme-2").await.expect("acme reports");

    // The certificate's tenant is the only one it may name.
    let mut r = report(outcome("x", 1, "+15550100001", 486));
    r.tenant = "globex".into();
    let status = acme.report_outcome(r).await.expect_err("acme into globex");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // A token for another tenant on acme's connection is refused too.
    let status = acme
        .report_outcome(with_token(
            report(outcome("x", 1, "+15550100001", 486)),
            "globex-key",
        ))
        .await
        .expect_err("globex token over acme's certificate");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // A valid certificate that maps to nobody authenticates nobody.
    let nobody = client_ca.client("nobody", None);
    let mut unmapped = connect(&server, &server_ca, Some(&nobody))
        .await
        .expect("the handshake succeeds");
    let status = report_via(&mut unmapped, "n").await.expect_err("unmapped");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // acme's subscription sees acme's events only.
    let mut stream = acme
        .subscribe_outcomes(pb::SubscribeOutcomesRequest {
            start: pb::StartPosition::Oldest as i32,
            ..Default::default()
        })
        .await
        .expect("acme subscribes")
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let msg = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a message within 30 s")
            .expect("stream open")
            .expect("message ok");
        if let Some(Kind::Event(e)) = msg.kind {
            let call = e.outcome.map(|o| o.call_id).unwrap_or_default();
            seen.push((e.tenant, call));
        }
    }
    assert_eq!(
        seen,
        vec![
            ("acme".to_owned(), "acme-1".to_owned()),
            ("acme".to_owned(), "acme-2".to_owned())
        ]
    );
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn optional_client_certificates_leave_tokens_working() {
    let dir = tempfile::tempdir().expect("dir");
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let mut config = mtls_config(dir.path(), &server_ca, &client_ca);
    if let Some(tls) = &mut config.tls {
        tls.client_auth = Some(ClientAuth::Optional);
    }
    let server = start_with(config).await;
    let mut anonymous = connect(&server, &server_ca, None)
        .await
        .expect("no certificate is fine");
    let status = report_via(&mut anonymous, "a")
        .await
        .expect_err("but something must authenticate");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    anonymous
        .report_outcome(with_token(
            report(outcome("t", 1, "+15550100001", 486)),
            "globex-key",
        ))
        .await
        .expect("a token authenticates");
    let foreign = Ca::new("foreign CA").client("acme-dialer", Some("spiffe://acme/dialer"));
    assert_refused(
        connect(&server, &server_ca, Some(&foreign)).await,
        "a certificate, when sent, must verify",
    )
    .await;
    server.stop().await.expect("stops");
}

/// Waits (bounded) until the reload status satisfies `done`.
async fn wait_reload(
    server: &RunningServer,
    done: impl Fn(&call_outcome::ReloadStatus) -> bool,
) -> call_outcome::ReloadStatus {
    let mut status = server.tls.as_ref().expect("tls").status();
    let seen = tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| done(s)))
        .await
        .expect("reload within 30 s")
        .expect("reloader alive");
    *seen
}

#[tokio::test]
async fn certificates_reload_without_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let ca_a = Ca::new("CA A");
    let ca_b = Ca::new("CA B");
    let tls = tls_files(dir.path(), &ca_a.server(), None);
    let (cert_file, key_file) = (tls.cert_file.clone(), tls.key_file.clone());
    let server = start_with(Config {
        tls: Some(tls),
        ..Config::default()
    })
    .await;
    let mut old_connection = connect(&server, &ca_a, None).await.expect("cert A");
    classify_once(Ok(old_connection.clone()))
        .await
        .expect("A serves");
    assert_refused(connect(&server, &ca_b, None).await, "B before the reload").await;

    // Cert B replaces A on disk (two writes: a poll may see a mixed pair, which must
    // fail and keep A, so the wait is for a successful reload).
    let b = ca_b.server();
    std::fs::write(&key_file, &b.key).expect("write key");
    std::fs::write(&cert_file, &b.cert).expect("write cert");
    let after_b = wait_reload(&server, |s| s.reloads >= 1).await;
    classify_once(connect(&server, &ca_b, None).await)
        .await
        .expect("new connections get B");
    assert_refused(connect(&server, &ca_a, None).await, "A after the reload").await;
    // Established connections keep going.
    old_connection
        .classify(classify(outcome("c", 1, "+15550100001", 486)))
        .await
        .expect("the old connection still works");

    // A broken certificate file is refused, and B keeps serving.
    std::fs::write(&cert_file, "-----BEGIN CERTIFICATE-----\nnot base64\n").expect("write");
    let broken = wait_reload(&server, |s| s.failures > after_b.failures).await;
    assert_eq!(broken.reloads, after_b.reloads);
    classify_once(connect(&server, &ca_b, None).await)
        .await
        .expect("B still serves after a broken file");
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn tls_in_a_config_file_is_checked_and_relative_to_it() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("CA");
    let pem = ca.server();
    write(dir.path(), "tls.crt", &pem.cert);
    write(dir.path(), "tls.key", &pem.key);
    let config_file = write(
        dir.path(),
        "svc.toml",
        "[tls]\ncert_file = \"tls.crt\"\nkey_file = \"tls.key\"\nreload_interval = \"1m\"\n",
    );
    let config = Config::load(Some(&config_file)).expect("loads");
    let tls = config.tls.expect("tls");
    assert_eq!(tls.cert_file, dir.path().join("tls.crt"));
    assert_eq!(tls.reload_interval, Duration::from_secs(60));
    assert!(!tls.client_cert_required());

    // check-config names the file at fault.
    let bad = write(
        dir.path(),
        "bad.toml",
        "[tls]\ncert_file = \"missing.crt\"\nkey_file = \"tls.key\"\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_call-outcome"))
        .args(["check-config", bad.to_str().expect("utf-8")])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.crt"), "{stderr}");
    // Client certificate mappings without a client CA cannot work.
    let no_ca = write(
        dir.path(),
        "no-ca.toml",
        "[tls]\ncert_file = \"tls.crt\"\nkey_file = \"tls.key\"\n\
         [auth]\nenabled = true\n[[auth.client_certs]]\nname = \"a\"\nsubject_cn = \"a\"\n\
         tenant = \"acme\"\nroles = [\"report\"]\n",
    );
    let err = Config::load(Some(&no_ca)).expect_err("no client CA");
    assert!(err.to_string().contains("client_ca_file"), "{err}");
}

#[tokio::test]
async fn the_cli_speaks_mutual_tls() {
    let dir = tempfile::tempdir().expect("dir");
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let server = start_with(mtls_config(dir.path(), &server_ca, &client_ca)).await;
    let ca_file = write(dir.path(), "server-ca.crt", &server_ca.pem());
    let client = client_ca.client("cli", Some("spiffe://acme/dialer"));
    let cert_file = write(dir.path(), "client.crt", &client.cert);
    let key_file = write(dir.path(), "client.key", &client.key);
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_call-outcome"))
                .env_remove("CALL_OUTCOME_TOKEN")
                .args(args)
                .output()
                .expect("runs")
        })
    };
    let path = |p: &Path| p.to_str().expect("utf-8").to_owned();
    let mut args: Vec<String> = [
        "report",
        "--call-id",
        "cli-tls-1",
        "--to",
        "+15550104477",
        "--sip-code",
        "603",
        "--json",
        "--server",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.push(server.url());
    args.extend([
        "--ca-cert".to_owned(),
        path(&ca_file),
        // The server's certificate names localhost; the URL has the address.
        "--tls-server-name".to_owned(),
        "localhost".to_owned(),
    ]);
    let mut with_cert = args.clone();
    let with_cert_flags: Vec<String> = args
        [args.iter().position(|a| a == "--server").expect("flag")..]
        .iter()
        .cloned()
        .chain([
            "--client-cert".to_owned(),
            path(&cert_file),
            "--client-key".to_owned(),
            path(&key_file),
        ])
        .collect();
    with_cert.extend([
        "--client-cert".to_owned(),
        path(&cert_file),
        "--client-key".to_owned(),
        path(&key_file),
    ]);
    let ok = run(with_cert).await.expect("join");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains("acme") || stdout.contains("event_id"),
        "{stdout}"
    );

    // subscribe takes the same flags: it reads the report back, as acme.
    let mut subscribe: Vec<String> = ["subscribe", "--from-oldest", "--max-events", "1"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    subscribe.extend(with_cert_flags.clone());
    let out = run(subscribe).await.expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.contains("cli-tls-1") && line.contains("acme"),
        "{line}"
    );

    let no_cert = run(args.clone()).await.expect("join");
    assert_eq!(no_cert.status.code(), Some(69), "{no_cert:?}");

    // TLS flags with a plaintext URL are a usage error, not a silent plaintext call.
    let mut plain = args.clone();
    let i = plain
        .iter()
        .position(|a| a.starts_with("https://"))
        .expect("url");
    plain[i] = format!("http://{}", server.addr);
    let out = run(plain).await.expect("join");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("https://"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop().await.expect("stops");
}

/// `webhooks.tls = true` serves the webhook listener with the `[tls]` certificate: a
/// provider's HTTPS callback (rustls here, HTTP/1.1) signed for the `https://` URL is
/// accepted, and plaintext gets no HTTP answer.
#[tokio::test]
async fn the_webhook_listener_serves_tls_with_the_public_certificate() {
    use call_outcome::auth::webhook::sign;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("webhook-ca");
    let mut config = Config::from_toml_str(
        "[webhooks]\nlisten = \"127.0.0.1:0\"\n[webhooks.tenants.default.twilio]\nauth_tokens = [\"tok\"]\n",
        Path::new("w.toml"),
    )
    .expect("config");
    config.tls = Some(tls_files(dir.path(), &ca.server(), None));
    config.webhooks.tls = true;
    let server = start_with(config).await;
    let hooks = server.webhooks_addr.expect("webhook listener");

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("CA pem"))
        .expect("root");
    let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(hooks)
        .await
        .expect("connect");
    let mut tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake with the [tls] certificate");
    let path = "/v1/webhooks/twilio/default";
    let body = "CallSid=CA-tls&CallStatus=busy&SipResponseCode=486&To=%2B15550104477";
    let params = call_outcome::CallbackParams(
        form_urlencoded::parse(body.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    );
    let host = format!("localhost:{}", hooks.port());
    let signature = sign::twilio("tok", &format!("https://{host}{path}"), &params);
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: {signature}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    // A TLS peer may close without close_notify after Connection: close.
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""result":"accepted""#), "{answer}");

    // Plaintext on the TLS listener: no HTTP answer (the request helper panics on a
    // response without a status line, which ends its task with an error).
    let plain = tokio::spawn(async move {
        post(
            hooks,
            path,
            "application/x-www-form-urlencoded",
            &[],
            body.as_bytes(),
        )
        .await
    });
    let plain = tokio::time::timeout(Duration::from_secs(10), plain)
        .await
        .expect("answered or closed in time");
    assert!(plain.is_err(), "plaintext got an HTTP answer: {plain:?}");
    server.stop().await.expect("stop");
}
