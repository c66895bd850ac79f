//! `accept` out of file descriptors (#15): the server backs off and logs instead of
//! spinning or dying, and serves again as soon as descriptors are free. Its own test
//! binary, because it lowers the process's descriptor limit.

mod common;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Descriptors open in this process now.
fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_survives_running_out_of_file_descriptors() {
    // The warnings show with --nocapture.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("call_outcome=warn")
        .with_test_writer()
        .try_init();
    let server = common::start().await;
    let mut client = common::client(&server).await;
    client
        .classify(common::classify(common::outcome(
            "c",
            1,
            "+15550100910",
            486,
        )))
        .await
        .expect("served before");

    // Another process (its own descriptors, started before the limit is lowered, which
    // it would inherit) opens 40 connections when told, and holds them.
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import socket, sys\n\
             sys.stdin.readline()\n\
             s = [socket.create_connection(('127.0.0.1', {port})) for _ in range(40)]\n\
             print('held', flush=True)\n\
             sys.stdin.read()\n",
            port = server.addr.port()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut to_holder = holder.stdin.take().expect("stdin");
    let mut from_holder = std::io::BufReader::new(holder.stdout.take().expect("stdout"));

    let saved = getrlimit(Resource::Nofile);
    // A few spare descriptors only: the server's next accepts fail with EMFILE.
    let tight = open_fds() + 4;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(tight),
            maximum: saved.maximum,
        },
    )
    .expect("lower the limit");
    {
        use std::io::{BufRead, Write};
        writeln!(to_holder, "go").expect("tell the holder");
        to_holder.flush().expect("flush");
        let mut line = String::new();
        from_holder.read_line(&mut line).expect("read");
        assert_eq!(line.trim(), "held");
    }
    // Out of descriptors for a while: the accept loop must back off, not spin.
    let cpu = process_cpu();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = process_cpu().saturating_sub(cpu);
    assert!(
        spent < Duration::from_millis(500),
        "the process burnt {spent:?} of CPU in 2 s out of descriptors"
    );

    // Descriptors come back: the held connections go, the limit is restored.
    drop(to_holder);
    holder.wait().expect("holder exits");
    setrlimit(Resource::Nofile, saved).expect("restore the limit");
    let mut served = false;
    for _ in 0..100 {
        if let Ok(mut c) =
            call_outcome::proto::call_outcome_service_client::CallOutcomeServiceClient::connect(
                server.url(),
            )
            .await
            && c.classify(common::classify(common::outcome(
                "c",
                1,
                "+15550100910",
                486,
            )))
            .await
            .is_ok()
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "served again once descriptors were free");
    // The connection made before never noticed.
    client
        .classify(common::classify(common::outcome(
            "c",
            1,
            "+15550100910",
            486,
        )))
        .await
        .expect("served after");
    server.stop().await.expect("clean stop");
}
