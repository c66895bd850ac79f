//! Stock clients of other languages against the real server, where their own behaviour
//! matters (#15): grpcio (Python) and @grpc/grpc-js (Node), with default options. The
//! scripts live in `tests/clients/`; `.ci/tools.sh grpcio grpc_js` installs the clients
//! into `.tools/` (the test command does). A missing client fails the test, never skips.

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
        "{} is missing: run `.ci/tools.sh grpcio grpc_js` (the test command does)",
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
