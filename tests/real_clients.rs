//! Stock clients of other languages against the real server, where their own behaviour
//! matters: grpcio (Python) and @grpc/grpc-js (Node), with default options (#15); the
//! providers' SDKs signing webhook callbacks (#17); the generated clients of `clients/`
//! as their users install them (#19). The scripts live in `tests/clients/`;
//! `.ci/tools.sh grpcio grpc_js webhook_sdks clients` installs the clients into `.tools/`
//! (the test command does). A missing client fails the test, never skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool(path: &str) -> PathBuf {
    let p = root().join(path);
    assert!(
        p.exists(),
        "{} is missing: run `.ci/tools.sh grpcio grpc_js webhook_sdks clients` (the test command does)",
        p.display()
    );
    p
}

fn run(mut command: Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{what}: {stdout}{stderr}");
    assert!(
        output.status.success(),
        "{what} failed:\n{stdout}\n{stderr}"
    );
}

/// `call-outcome serve` itself (the binary users run), on a free loopback port.
struct Binary {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Binary {
    fn start() -> Binary {
        // A free port: bound at 0, released, handed to the binary.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let child = Command::new(env!("CARGO_BIN_EXE_call-outcome"))
            .args(["serve", "--listen", &addr.to_string(), "--admin-listen", ""])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("serve starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "serve never listened on {addr}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Binary { child, addr }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proto_dir() -> String {
    root().join("proto").display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_reads_bounded_errors_and_deadlines_by_the_book() {
    let python = tool(".tools/bin/grpc-python");
    let server = common::start().await;
    let mut command = Command::new(python);
    command
        .arg(root().join("tests/clients/grpcio_check.py"))
        .arg(server.addr.to_string())
        .arg(proto_dir());
    tokio::task::spawn_blocking(move || run(command, "grpcio"))
        .await
        .expect("join");
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_js_reads_a_bounded_invalid_argument() {
    let modules = tool(".tools/node/node_modules");
    let server = common::start().await;
    let mut command = Command::new("node");
    command
        .env("NODE_PATH", Path::new(&modules))
        .arg(root().join("tests/clients/grpc_js_check.js"))
        .arg(server.addr.to_string())
        .arg(proto_dir());
    tokio::task::spawn_blocking(move || run(command, "grpc-js"))
        .await
        .expect("join");
    server.stop().await.expect("clean stop");
}

/// #19: `pip install ./clients/python` against the binary, then Classify, a report and its duplicate, an
/// INVALID_ARGUMENT decoded by grpcio's rich-error support, and a resumed subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_python_client() {
    let python = tool(".tools/bin/client-python");
    tokio::task::spawn_blocking(move || {
        let server = Binary::start();
        let mut command = Command::new(python);
        command
            .arg(root().join("tests/clients/python_client_check.py"))
            .arg(server.addr.to_string());
        run(command, "python client");
    })
    .await
    .expect("join");
}

/// #19: the npm package of `clients/typescript` (Protobuf-ES over Connect's gRPC
/// transport) against the binary, with the same checks; BadRequest through `ConnectError.findDetails`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_typescript_client() {
    let installed = tool(".tools/ts-client/node_modules/@call-outcome/client");
    // Node resolves the package from the script's folder: run a copy beside the install.
    let folder = installed
        .ancestors()
        .nth(3)
        .expect("the install's folder")
        .to_owned();
    let script = folder.join("ts_client_check.mjs");
    std::fs::copy(root().join("tests/clients/ts_client_check.mjs"), &script).expect("copy");
    tokio::task::spawn_blocking(move || {
        let server = Binary::start();
        let mut command = Command::new("node");
        command.arg(&script).arg(server.addr.to_string());
        run(command, "typescript client");
    })
    .await
    .expect("join");
}

/// #19: examples/sms-fallback on the generated client, against the real binary through
/// a restart of the subscriber and of the server: one message per decline whose
/// decision suggests SMS, none for the rest, the server's new log reported as a gap; and
/// its HTTP sender's request to an SMS API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sms_fallback_example_sends_each_message_once() {
    let python = tool(".tools/bin/client-python");
    let mut command = Command::new(python);
    command
        .arg(root().join("tests/clients/sms_fallback_check.py"))
        .arg(env!("CARGO_BIN_EXE_call-outcome"))
        .arg(root().join("examples/sms-fallback/sms_fallback.py"));
    tokio::task::spawn_blocking(move || run(command, "sms fallback"))
        .await
        .expect("join");
}

/// The providers' own SDKs sign the callbacks (twilio-python's `RequestValidator`,
/// plivo-python's V3 signature, PyJWT for Vonage, cryptography's Ed25519 for Telnyx):
/// the listener accepts what they sign and refuses what was changed afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_signed_by_the_providers_sdks_are_accepted() {
    use call_outcome::auth::webhook::sign;
    let python = tool(".tools/bin/sdk-python");
    let (telnyx_public, _) = sign::telnyx_keys([11; 32]).expect("keys");
    let text = format!(
        "[webhooks]\nlisten = \"127.0.0.1:0\"\n\
         [webhooks.tenants.acme.twilio]\nauth_tokens = [\"sdk-twilio-token\"]\n\
         [webhooks.tenants.acme.plivo]\nauth_tokens = [\"sdk-plivo-token\"]\n\
         [webhooks.tenants.acme.vonage]\nsignature_secrets = [\"sdk-vonage-secret\"]\n\
         [webhooks.tenants.acme.telnyx]\npublic_keys = [\"{telnyx_public}\"]\n"
    );
    let config =
        call_outcome::config::Config::from_toml_str(&text, Path::new("sdk.toml")).expect("config");
    let server = common::start_with(config).await;
    let hooks = server.webhooks_addr.expect("webhook listener");
    let mut command = Command::new(python);
    command
        .arg(root().join("tests/clients/webhook_sdks.py"))
        .arg(hooks.to_string());
    tokio::task::spawn_blocking(move || run(command, "webhook SDKs"))
        .await
        .expect("join");
    server.stop().await.expect("clean stop");
}
