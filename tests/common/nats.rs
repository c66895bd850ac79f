//! A real `nats-server` with JetStream for one test: free loopback port, its own store
//! folder, killed on drop. The binary comes from `NATS_SERVER_BIN` or
//! `.tools/bin/nats-server` (installed by `.ci/tools.sh nats_server`); without it the
//! test fails, it never skips.
#![allow(dead_code)]

use call_outcome::NatsConfig;
use call_outcome::SubscriptionConfig;
use call_outcome::config::{Backend, Config};
use call_outcome::store::StoreLimits;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

pub struct NatsServer {
    binary: PathBuf,
    pub port: u16,
    /// The HTTP monitoring port (`/connz`, `/varz`): what the server itself counts.
    pub monitor_port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    let path = std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/nats-server")
        });
    assert!(
        path.is_file(),
        "nats-server not found at {}: run `.ci/tools.sh nats_server` (or set NATS_SERVER_BIN)",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl NatsServer {
    /// Starts a server and waits until JetStream answers.
    pub async fn start() -> NatsServer {
        let mut server = NatsServer {
            binary: binary(),
            port: free_port(),
            monitor_port: free_port(),
            store: tempfile::tempdir().expect("store dir"),
            child: None,
        };
        server.spawn();
        server.wait_ready().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-m")
            .arg(self.monitor_port.to_string())
            .arg("-sd")
            .arg(self.store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
    }

    /// Polls until a client connects and JetStream answers (bounded, no fixed sleep).
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let attempt = async {
                let client = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(1))
                    .connect(self.url())
                    .await
                    .ok()?;
                async_nats::jetstream::new(client)
                    .query_account()
                    .await
                    .ok()
            };
            if tokio::time::timeout(Duration::from_secs(2), attempt)
                .await
                .ok()
                .flatten()
                .is_some()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server on port {} not ready within 20 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Messages the server received from its clients so far (`/varz` `in_msgs`): every
    /// KV operation and JetStream publish is one request, so a difference over N reports
    /// divided by N is the requests (round trips) per report.
    pub async fn messages_in(&self) -> u64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.monitor_port))
            .await
            .expect("monitoring port");
        stream
            .write_all(b"GET /varz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .expect("request /varz");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read /varz");
        let body = response.split("\r\n\r\n").nth(1).expect("a body");
        let varz: serde_json::Value = serde_json::from_str(body).expect("varz JSON");
        varz["in_msgs"].as_u64().expect("in_msgs")
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server's process (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal(rustix::process::Signal::STOP);
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(rustix::process::Signal::CONT);
    }

    fn signal(&self, which: rustix::process::Signal) {
        let pid = self.child.as_ref().expect("running").id();
        let pid = rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")).expect("pid");
        rustix::process::kill_process(pid, which).expect("signal the server");
    }

    /// Starts it again on the same port and store, and waits until it is ready.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }

    /// A service config on this server's JetStream.
    pub fn config(&self) -> Config {
        let defaults = Config::default();
        Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            admin_listen: "127.0.0.1:0".into(),
            backend: Backend::Nats,
            nats: NatsConfig {
                url: self.url(),
                request_timeout: Duration::from_secs(2),
                connect_timeout: Duration::from_secs(5),
                ..NatsConfig::default()
            },
            subscriptions: SubscriptionConfig {
                heartbeat: Duration::from_millis(200),
                ..defaults.subscriptions.clone()
            },
            store: StoreLimits {
                in_flight_wait: Duration::from_secs(5),
                ..defaults.store.clone()
            },
            shutdown_grace: Duration::from_secs(5),
            ..defaults
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
