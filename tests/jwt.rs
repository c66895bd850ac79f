//! JWT bearer tokens over a real gRPC connection: HS256 and ES256 tokens map to the
//! tenant and roles in their claims; expired, wrong-audience, wrong-issuer and forged
//! tokens are UNAUTHENTICATED; a missing role is PERMISSION_DENIED; resume tokens do not
//! cross tenants; API keys keep working beside JWTs; `[auth.jwt]` in a config file.

mod common;

use call_outcome::auth::jwt::{JwtConfig, JwtKeyConfig};
use call_outcome::auth::{ApiKeyConfig, AuthConfig, Role, hash_key};
use call_outcome::config::Config;
use call_outcome::proto as pb;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use pb::subscribe_outcomes_response::Kind;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::Code;

const SECRET: &str = "test-only-hs256-secret-32-bytes-long!";
const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "call-outcome";

/// Signing material of the test's identity provider.
struct Idp {
    ec: rcgen::KeyPair,
}

impl Idp {
    fn new() -> Idp {
        Idp {
            ec: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("EC key"),
        }
    }

    fn hs256(&self, claims: &Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("sign")
    }

    fn es256(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("ec-1".into());
        encode(
            &header,
            claims,
            &EncodingKey::from_ec_pem(self.ec.serialize_pem().as_bytes()).expect("EC pem"),
        )
        .expect("sign")
    }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(tenant: &str, roles: &[&str]) -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": format!("{tenant}-dialer"),
        "exp": now() + 300, "tenant": tenant, "roles": roles,
    })
}

fn jwt_config(dir: &Path, idp: &Idp) -> Config {
    let secret = dir.join("hs256.key");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("write");
    let public = dir.join("ec.pem");
    std::fs::write(&public, idp.ec.public_key_pem()).expect("write");
    Config {
        auth: AuthConfig {
            enabled: true,
            api_keys: vec![ApiKeyConfig {
                name: "ops".into(),
                sha256: hash_key("ops-key"),
                tenant: "acme".into(),
                roles: vec![Role::Report],
            }],
            jwt: Some(JwtConfig {
                issuer: Some(ISSUER.into()),
                audience: Some(AUDIENCE.into()),
                tenant_claim: "tenant".into(),
                roles_claim: "roles".into(),
                leeway: Duration::from_secs(5),
                keys: vec![
                    JwtKeyConfig {
                        kid: None,
                        algorithm: Algorithm::HS256,
                        secret_file: Some(secret),
                        secret_env: None,
                        public_key_file: None,
                    },
                    JwtKeyConfig {
                        kid: Some("ec-1".into()),
                        algorithm: Algorithm::ES256,
                        secret_file: None,
                        secret_env: None,
                        public_key_file: Some(public),
                    },
                ],
            }),
            ..AuthConfig::default()
        },
        ..Config::default()
    }
}

#[tokio::test]
async fn valid_tokens_act_for_their_claimed_tenant() {
    let dir = tempfile::tempdir().expect("dir");
    let idp = Idp::new();
    let server = start_with(jwt_config(dir.path(), &idp)).await;
    let mut client = client(&server).await;

    let hs = idp.hs256(&claims("acme", &["report"]));
    report_as(&mut client, &hs, "", "hs-1", 603)
        .await
        .expect("HS256 token reports");
    report_as(&mut client, &hs, "acme", "hs-2", 603)
        .await
        .expect("naming its own tenant");
    let status = report_as(&mut client, &hs, "globex", "hs-3", 603)
        .await
        .expect_err("another tenant");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    let es = idp.es256(&claims("globex", &["report"]));
    report_as(&mut client, &es, "", "es-1", 603)
        .await
        .expect("ES256 token reports");
    // `scope`-style roles: one space-separated string.
    let mut scoped = claims("globex", &[]);
    scoped["roles"] = json!("openid report");
    report_as(&mut client, &idp.es256(&scoped), "", "es-2", 603)
        .await
        .expect("space-separated roles");

    // API keys keep working beside JWTs.
    report_as(&mut client, "ops-key", "", "key-1", 603)
        .await
        .expect("API key");
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated_and_missing_roles_denied() {
    let dir = tempfile::tempdir().expect("dir");
    let idp = Idp::new();
    let server = start_with(jwt_config(dir.path(), &idp)).await;
    let mut client = client(&server).await;

    let mut expired = claims("acme", &["report"]);
    expired["exp"] = json!(now() - 120);
    let mut wrong_aud = claims("acme", &["report"]);
    wrong_aud["aud"] = json!("another-service");
    let mut wrong_iss = claims("acme", &["report"]);
    wrong_iss["iss"] = json!("https://evil.example");
    let mut no_tenant = claims("acme", &["report"]);
    no_tenant.as_object_mut().expect("object").remove("tenant");
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &claims("acme", &["report"]),
        &EncodingKey::from_secret(b"not-the-secret-not-the-secret-!!"),
    )
    .expect("sign");
    for (what, token, message) in [
        ("expired", idp.hs256(&expired), "expired"),
        ("wrong audience", idp.hs256(&wrong_aud), "audience"),
        ("wrong issuer", idp.es256(&wrong_iss), "issuer"),
        ("no tenant claim", idp.hs256(&no_tenant), "tenant"),
        ("forged", forged, "signature"),
        ("not a JWT", "a.b.c".to_owned(), "JWT"),
    ] {
        let status = report_as(&mut client, &token, "", what, 603)
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        assert!(status.message().contains(message), "{what}: {status:?}");
        // The refusal never echoes the token.
        assert!(!status.message().contains(&token), "{what}: {status:?}");
    }

    let subscriber = idp.hs256(&claims("acme", &["subscribe"]));
    let status = report_as(&mut client, &subscriber, "", "no-role", 603)
        .await
        .expect_err("missing report role");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let nothing = idp.hs256(&claims("acme", &[]));
    let status = client
        .subscribe_outcomes(with_token(
            pb::SubscribeOutcomesRequest::default(),
            &nothing,
        ))
        .await
        .expect_err("no roles at all");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn resume_tokens_do_not_cross_jwt_tenants() {
    let dir = tempfile::tempdir().expect("dir");
    let idp = Idp::new();
    let server = start_with(jwt_config(dir.path(), &idp)).await;
    let mut client = client(&server).await;
    let acme = idp.hs256(&claims("acme", &["report", "subscribe"]));
    let globex = idp.es256(&claims("globex", &["admin"]));
    report_as(&mut client, &globex, "", "g-1", 603)
        .await
        .expect("globex");
    report_as(&mut client, &acme, "", "a-1", 603)
        .await
        .expect("acme");

    let mut stream = client
        .subscribe_outcomes(with_token(
            pb::SubscribeOutcomesRequest {
                start: pb::StartPosition::Oldest as i32,
                ..Default::default()
            },
            &acme,
        ))
        .await
        .expect("acme subscribes")
        .into_inner();
    let event = loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a message within 30 s")
            .expect("open")
            .expect("ok");
        if let Some(Kind::Event(e)) = msg.kind {
            break e;
        }
    };
    assert_eq!(event.tenant, "acme");

    let stolen = pb::SubscribeOutcomesRequest {
        resume_token: event.resume_token.clone(),
        ..Default::default()
    };
    let code = match client.subscribe_outcomes(with_token(stolen, &globex)).await {
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

#[test]
fn jwt_settings_load_from_a_config_file() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("jwt.key"), SECRET).expect("write");
    let file = dir.path().join("svc.toml");
    std::fs::write(
        &file,
        "listen = \"0.0.0.0:50051\"\n[auth]\nenabled = true\n[auth.jwt]\n\
         issuer = \"https://idp.example\"\naudience = \"call-outcome\"\nleeway = \"10s\"\n\
         [[auth.jwt.keys]]\nalgorithm = \"HS256\"\nsecret_file = \"jwt.key\"\n",
    )
    .expect("write");
    // JWT alone counts as authentication for the public-listen rule.
    let config = Config::load(Some(&file)).expect("loads");
    let jwt = config.auth.jwt.expect("jwt");
    assert_eq!(jwt.keys[0].secret_file, Some(dir.path().join("jwt.key")));
    assert_eq!(jwt.leeway, Duration::from_secs(10));
    assert_eq!(jwt.tenant_claim, "tenant");

    std::fs::write(
        &file,
        "[auth]\nenabled = true\n[auth.jwt]\n[[auth.jwt.keys]]\nalgorithm = \"RS256\"\n\
         public_key_file = \"missing.pem\"\n",
    )
    .expect("write");
    let err = Config::load(Some(&file)).expect_err("missing key file");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    std::fs::write(
        &file,
        "[auth]\nenabled = true\n[auth.jwt]\n[[auth.jwt.keys]]\nalgorithm = \"HS257\"\n",
    )
    .expect("write");
    let err = Config::load(Some(&file)).expect_err("unknown algorithm");
    assert!(err.to_string().contains("svc.toml:5:"), "{err}");
}
