//! Load generator: measures call-outcome against its limit, a bare tonic server with the
//! same contract and message sizes that does no work at all, in one run.
//!
//! `cargo bench --bench loadgen -- <command> [options]`, with the release server built
//! (`cargo build --release`). Commands:
//!
//! - `unary`: `Classify` and `ReportOutcome`, alternating bare / service runs of a fixed
//!   duration at `--connections` × `--in-flight`; requests/s, p50/p99/p999 latency (HDR
//!   histogram), server and client CPU, loaded RSS, and the ratios.
//! - `fanout`: N subscribers (`--subscribers 1,100,1000`) while a reporter publishes
//!   decline events at `--rate` per second; delivery latency p50/p99 and losses, against a
//!   bare server that streams from a `tokio::sync::broadcast` in the same topology.
//! - `memory`: resident memory idle, per idle subscriber, per tracked destination.
//! - `h2load`: writes a pre-encoded gRPC `Classify` body and runs (or prints) the h2load
//!   cross-check against both servers.
//! - `webhooks`: signed Telnyx (Ed25519) and Twilio (HMAC-SHA1) call-status callbacks
//!   over HTTP/2 to the webhook listener, each a new terminal outcome, against
//!   `ReportOutcome` on the same service in the same run: accepted webhooks/s and p99.
//! - `nats`: `ReportOutcome` on the JetStream backend against the memory backend, in
//!   one run of alternating rounds: one replica on one nats-server, two replicas on it
//!   with the load split across both, and one replica on a three-node cluster with the
//!   stream and buckets at 1 and at 3 replicas (nats-server from `NATS_SERVER_BIN` or
//!   `.tools/bin/nats-server`; the servers share core 0 with the service).
//! - `all`: the first four above. `smoke`: tiny counts, checks correctness only (CI).
//!
//! Servers run as child processes pinned to core 0 (`taskset -c 0`), the client on core 1
//! (`sched_setaffinity`); `--no-pin` disables both. Only loopback targets are accepted
//! unless `--allow-non-loopback` is given. Every run is bounded in time or count.

// The bare server (a child process of this binary) runs on the allocator the service
// ships with, so that the ratio compares the work done, not two allocators.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use call_outcome::config::Config;
use call_outcome::domain::{Outcome, Tenant};
use call_outcome::proto as pb;
use hdrhistogram::Histogram;
use pb::call_outcome_service_client::CallOutcomeServiceClient;
use pb::call_outcome_service_server::{CallOutcomeService, CallOutcomeServiceServer};
use prost::Message;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const USAGE: &str = "\
usage: cargo bench --bench loadgen -- <unary|fanout|memory|h2load|webhooks|nats|all|smoke> [options]
  --server-bin PATH        call-outcome binary [target/release/call-outcome]
  --server-args 'ARGS'     extra `serve` arguments, e.g. '--config bench.toml'
  --target ADDR            measure an already running service instead of a child
  --allow-non-loopback     accept a --target that is not a loopback address
  --duration SECS          measured time of one unary run [10]
  --warmup SECS            unmeasured time before each run [2]
  --rounds N               bare/service alternations [3]
  --connections N          HTTP/2 connections [1]
  --in-flight N            requests in flight per connection [64]
  --subscribers LIST       fan-out subscriber counts [1,100,1000]
  --rate N                 fan-out events per second [100]
  --fanout-secs SECS       fan-out publishing time per run [10]
  --idle-subscribers N     memory: idle subscribers [1000]
  --destinations N         memory: distinct destinations reported [1000000]
  --h2load-requests N      h2load: requests per target [200000]
  --no-pin                 do not pin servers to core 0 and the client to core 1
  --rpcs LIST              unary: which RPCs, of classify,report [both]";

#[derive(Debug, Clone)]
struct Args {
    command: String,
    server_bin: PathBuf,
    server_args: Vec<String>,
    target: Option<SocketAddr>,
    allow_non_loopback: bool,
    duration: Duration,
    warmup: Duration,
    rounds: usize,
    connections: usize,
    in_flight: usize,
    subscribers: Vec<usize>,
    rate: u32,
    fanout_secs: u64,
    idle_subscribers: usize,
    destinations: u64,
    h2load_requests: u64,
    pin: bool,
    listen: Option<SocketAddr>,
    rpcs: Vec<Rpc>,
}

impl Args {
    fn parse() -> AnyResult<Args> {
        let mut args = Args {
            command: String::new(),
            server_bin: PathBuf::from("target/release/call-outcome"),
            server_args: Vec::new(),
            target: None,
            allow_non_loopback: false,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            rounds: 3,
            connections: 1,
            in_flight: 64,
            subscribers: vec![1, 100, 1000],
            rate: 100,
            fanout_secs: 10,
            idle_subscribers: 1000,
            destinations: 1_000_000,
            h2load_requests: 200_000,
            pin: true,
            listen: None,
            rpcs: vec![Rpc::Classify, Rpc::Report],
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                // cargo bench appends --bench to harness = false targets.
                "--bench" => {}
                "--server-bin" => args.server_bin = value()?.into(),
                "--server-args" => {
                    args.server_args = value()?.split_whitespace().map(str::to_owned).collect()
                }
                "--target" => args.target = Some(value()?.parse()?),
                "--allow-non-loopback" => args.allow_non_loopback = true,
                "--duration" => args.duration = Duration::from_secs_f64(value()?.parse()?),
                "--warmup" => args.warmup = Duration::from_secs_f64(value()?.parse()?),
                "--rounds" => args.rounds = value()?.parse()?,
                "--connections" => args.connections = value()?.parse()?,
                "--in-flight" => args.in_flight = value()?.parse()?,
                "--subscribers" => {
                    args.subscribers = value()?
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()?
                }
                "--rate" => args.rate = value()?.parse()?,
                "--fanout-secs" => args.fanout_secs = value()?.parse()?,
                "--idle-subscribers" => args.idle_subscribers = value()?.parse()?,
                "--destinations" => args.destinations = value()?.parse()?,
                "--h2load-requests" => args.h2load_requests = value()?.parse()?,
                "--no-pin" => args.pin = false,
                "--rpcs" => {
                    args.rpcs = value()?
                        .split(',')
                        .map(|name| match name {
                            "classify" => Ok(Rpc::Classify),
                            "report" => Ok(Rpc::Report),
                            other => Err(format!("--rpcs: unknown RPC {other}")),
                        })
                        .collect::<Result<_, _>>()?
                }
                "--listen" => args.listen = Some(value()?.parse()?),
                "-h" | "--help" => args.command = "help".into(),
                other if !other.starts_with('-') && args.command.is_empty() => {
                    args.command = other.into()
                }
                other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
            }
        }
        if args.connections == 0 || args.in_flight == 0 || args.rounds == 0 || args.rate == 0 {
            return Err("--connections, --in-flight, --rounds and --rate must be positive".into());
        }
        if let Some(target) = args.target
            && !target.ip().is_loopback()
            && !args.allow_non_loopback
        {
            return Err(format!(
                "refusing non-loopback target {target}: load tests run on loopback \
                 (pass --allow-non-loopback to override)"
            )
            .into());
        }
        Ok(args)
    }
}

fn main() -> std::process::ExitCode {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if args.command == "bare-server" {
        return match bare_server_main(args.listen) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bare server: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if args.pin && cores() >= 2 {
        pin_to_core(1);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = runtime.block_on(async {
        match args.command.as_str() {
            "unary" => unary(&args).await.map(drop),
            "nats" => nats(&args).await.map(drop),
            "fanout" => fanout(&args).await.map(drop),
            "memory" => memory(&args).await.map(drop),
            "h2load" => h2load(&args).await,
            "webhooks" => webhooks(&args).await,
            "all" => all(&args).await,
            "smoke" => smoke(&args).await,
            // `cargo bench` / `cargo test --all-targets` run every bench target without
            // arguments: say how to use this one and succeed.
            "" | "help" => {
                println!("{USAGE}");
                Ok(())
            }
            other => Err(format!("unknown command {other}\n{USAGE}").into()),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// Processes, pinning, resources.

/// Cores this process may use, read once before the client pins itself to one.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn pin_to_core(core: usize) {
    // For this thread; threads created afterwards (the runtime's) inherit the mask.
    let mut set = rustix::thread::CpuSet::new();
    set.set(core);
    if rustix::thread::sched_setaffinity(None, &set).is_err() {
        eprintln!("loadgen: cannot pin the client to core {core}; running unpinned");
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn free_port() -> AnyResult<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Which server a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Bare,
    Service,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bare => "bare",
            Kind::Service => "service",
        }
    }
}

/// A server child process (killed on drop), or an external target.
struct Server {
    kind: Kind,
    addr: SocketAddr,
    child: Option<std::process::Child>,
}

impl Server {
    async fn start(kind: Kind, args: &Args, env: &[(&str, &str)]) -> AnyResult<Server> {
        if let (Kind::Service, Some(addr)) = (kind, args.target) {
            let server = Server {
                kind,
                addr,
                child: None,
            };
            server.wait_ready().await?;
            return Ok(server);
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let (program, mut rest): (PathBuf, Vec<String>) = match kind {
            Kind::Service => {
                if !args.server_bin.is_file() {
                    return Err(format!(
                        "{} not found: run `cargo build --release` first or pass --server-bin",
                        args.server_bin.display()
                    )
                    .into());
                }
                let mut rest = vec!["serve".into(), "--listen".into(), addr.to_string()];
                // No admin listener unless asked for: never the default 9090, which a
                // service running beside the benchmark (or a second replica) holds.
                if !args
                    .server_args
                    .iter()
                    .any(|a| a.starts_with("--admin-listen"))
                {
                    rest.extend(["--admin-listen".into(), String::new()]);
                }
                rest.extend(args.server_args.iter().cloned());
                (args.server_bin.clone(), rest)
            }
            Kind::Bare => (
                std::env::current_exe()?,
                vec!["bare-server".into(), "--listen".into(), addr.to_string()],
            ),
        };
        let pin = args.pin && cores() >= 2 && on_path("taskset");
        if args.pin && cores() >= 2 && !pin {
            eprintln!("loadgen: taskset not found; the server runs unpinned");
        }
        let mut command = if pin {
            rest.splice(
                0..0,
                ["-c".into(), "0".into(), program.display().to_string()],
            );
            Command::new("taskset")
        } else {
            Command::new(&program)
        };
        command
            .args(&rest)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("LOADGEN_SERVER_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn()?;
        let server = Server {
            kind,
            addr,
            child: Some(child),
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&self) -> AnyResult<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(channel) = connect(self.addr).await {
                let mut client = CallOutcomeServiceClient::new(channel);
                if client.classify(classify_request()).await.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} server on {} never answered",
                    self.kind.name(),
                    self.addr
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// Resident memory in bytes (VmRSS), when the server is our child.
    fn rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// User + system CPU time of the server so far.
    fn cpu(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        // Fields after the command name (which may contain spaces) start at state (3).
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        let hz = rustix::param::clock_ticks_per_second().max(1);
        Some(Duration::from_secs_f64(ticks as f64 / hz as f64))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// CPU time of this process (the client).
fn own_cpu() -> Duration {
    // User and system time of every thread of this process, as getrusage adds them.
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

async fn connect(addr: SocketAddr) -> AnyResult<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

// ---------------------------------------------------------------------------------------
// Requests.

const US_E164: &str = "+15550104477";

/// The Classify request of every run: a 480 with a Q.850 Reason, to a known destination.
fn classify_request() -> pb::ClassifyRequest {
    pb::ClassifyRequest {
        outcome: Some(pb::CallOutcome {
            call_id: "lg-classify".into(),
            attempt: 1,
            to: US_E164.into(),
            sip: Some(pb::SipResponse {
                code: Some(480),
                reason_phrase: "Temporarily Unavailable".into(),
                reason_header: "Q.850;cause=19;text=\"No answer\"".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        tenant: String::new(),
    }
}

/// Destination `n` of a pool: mostly E.164, some SIP URIs and national numbers.
fn destination(n: u64, distinct: bool) -> String {
    if distinct {
        return format!("+1555{:07}", n % 10_000_000);
    }
    match n % 10 {
        0..=6 => format!("+1555010{:04}", n % 10_000),
        7 | 8 => format!("sip:+4930{:08}@carrier.example.com;user=phone", n % 10_000),
        _ => format!("+44 20 7946 {:04}", n % 10_000),
    }
}

/// Report number `seq` of a run: distinct call ids (a repeat would short-circuit as a
/// duplicate) and a mix of outcomes.
fn report_request(salt: u64, seq: u64, distinct_destinations: bool) -> pb::ReportOutcomeRequest {
    let (code, reason, retry_after) = match seq % 8 {
        0 | 1 => (486, "Q.850;cause=17;text=\"User busy\"", ""),
        2 => (603, "", ""),
        3 => (480, "Q.850;cause=19", ""),
        4 => (503, "", "120"),
        5 => (404, "", ""),
        6 => (487, "", ""),
        _ => (408, "", ""),
    };
    pb::ReportOutcomeRequest {
        outcome: Some(pb::CallOutcome {
            call_id: format!("lg-{salt:x}-{seq}"),
            attempt: 1,
            to: destination(seq, distinct_destinations),
            sip: Some(pb::SipResponse {
                code: Some(code),
                reason_header: reason.into(),
                retry_after_header: retry_after.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        tenant: String::new(),
    }
}

fn salt() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos & 0xffff_ffff) ^ (NEXT.fetch_add(1, Ordering::Relaxed) << 32)
}

// ---------------------------------------------------------------------------------------
// The bare server.

/// The same contract with canned responses: no validation, no classification, no store.
struct Bare {
    report: pb::ReportOutcomeResponse,
    classify: pb::ClassifyResponse,
    event: pb::OutcomeEvent,
    events: tokio::sync::broadcast::Sender<pb::SubscribeOutcomesResponse>,
    sequence: AtomicU64,
}

impl Bare {
    /// Canned responses of the size the service sends for the harness's requests,
    /// computed once by the library's own pipeline.
    async fn new() -> AnyResult<Bare> {
        let pipeline = call_outcome::server::backends::build(&Config::default())
            .await?
            .pipeline;
        let tenant = Tenant::parse("default", 64)?;
        let report = Outcome {
            call_id: format!("lg-{:x}-{}", salt(), 1_000_000),
            attempt: Some(1),
            to: US_E164.into(),
            sip_code: Some(486),
            reason_header: "Q.850;cause=17;text=\"User busy\"".into(),
            ..Default::default()
        };
        let reported = pipeline.report(tenant.clone(), report.clone()).await?;
        let classify = Outcome {
            call_id: "lg-classify".into(),
            attempt: Some(1),
            to: US_E164.into(),
            sip_code: Some(480),
            reason_phrase: "Temporarily Unavailable".into(),
            reason_header: "Q.850;cause=19;text=\"No answer\"".into(),
            ..Default::default()
        };
        let classified = pipeline.classify(&tenant, &classify).await?;
        let classification: pb::Classification = (&*reported.report.classification).into();
        let decision: pb::Decision = (&*reported.report.decision).into();
        let event = pb::OutcomeEvent {
            event_id: reported.report.event_id.clone(),
            sequence: 0,
            // The service's tokens are base64 of epoch and sequence: about this long.
            resume_token: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
            tenant: "default".into(),
            outcome: Some((&report).into()),
            classification: Some(classification.clone()),
            decision: Some(decision.clone()),
            recorded_at: Some(call_outcome::timestamp(reported.report.recorded_at)),
            destination: reported.report.destination.clone(),
        };
        Ok(Bare {
            report: pb::ReportOutcomeResponse {
                classification: Some(classification),
                decision: Some(decision),
                event_id: reported.report.event_id.clone(),
                duplicate: false,
                destination: reported.report.destination.clone(),
            },
            classify: pb::ClassifyResponse {
                classification: Some((&classified.classification).into()),
                decision: Some((&classified.decision).into()),
            },
            event,
            events: tokio::sync::broadcast::channel(4096).0,
            sequence: AtomicU64::new(0),
        })
    }
}

type EventStream =
    Pin<Box<dyn Stream<Item = Result<pb::SubscribeOutcomesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl CallOutcomeService for Bare {
    async fn report_outcome(
        &self,
        request: Request<pb::ReportOutcomeRequest>,
    ) -> Result<Response<pb::ReportOutcomeResponse>, Status> {
        // Fan-out baseline only: with subscribers, every report becomes one broadcast
        // event carrying the reported outcome (and so its timestamp label).
        if self.events.receiver_count() > 0 {
            let mut event = self.event.clone();
            event.outcome = request.into_inner().outcome;
            event.sequence = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
            let _ = self.events.send(pb::SubscribeOutcomesResponse {
                kind: Some(pb::subscribe_outcomes_response::Kind::Event(event)),
            });
        }
        Ok(Response::new(self.report.clone()))
    }

    async fn classify(
        &self,
        _request: Request<pb::ClassifyRequest>,
    ) -> Result<Response<pb::ClassifyResponse>, Status> {
        Ok(Response::new(self.classify.clone()))
    }

    type SubscribeOutcomesStream = EventStream;

    async fn subscribe_outcomes(
        &self,
        _request: Request<pb::SubscribeOutcomesRequest>,
    ) -> Result<Response<Self::SubscribeOutcomesStream>, Status> {
        let stream =
            tokio_stream::wrappers::BroadcastStream::new(self.events.subscribe()).map(|item| {
                match item {
                    Ok(message) => Ok(message),
                    Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                        Ok(pb::SubscribeOutcomesResponse {
                            kind: Some(pb::subscribe_outcomes_response::Kind::Gap(
                                // The bare server fills the text as the service does.
                                #[allow(deprecated)]
                                pb::Gap {
                                    first_sequence: 0,
                                    last_sequence: n,
                                    reason: "lagged".into(),
                                    resume_token: String::new(),
                                    reason_code: pb::GapReason::Unspecified.into(),
                                },
                            )),
                        })
                    }
                }
            });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn bare_server_main(listen: Option<SocketAddr>) -> AnyResult<()> {
    let listen = listen.ok_or("bare-server needs --listen")?;
    // Tokio's default runtime, not the service's (`server::runtime`, without the LIFO
    // slot): the bare server answered `ReportOutcome` faster on the default one (56,822-
    // 58,167 against 52,574 requests/s, docs/performance.md, "The runtime"), so the
    // default is the higher limit, and the ratio is not flattered by a slower one.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let bare = Bare::new().await?;
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .max_concurrent_streams(1024)
                .add_service(CallOutcomeServiceServer::new(bare))
                .serve(listen)
                .await?;
            Ok(())
        })
}

// ---------------------------------------------------------------------------------------
// Unary runs.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Classify,
    Report,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Rpc::Classify => "Classify",
            Rpc::Report => "ReportOutcome",
        }
    }
}

/// How long or how much one run does.
#[derive(Debug, Clone, Copy)]
enum Bound {
    For(Duration),
    Count(u64),
}

struct UnaryRun {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    response_bytes: usize,
    server_cpu: Option<Duration>,
    client_cpu: Duration,
    rss: Option<u64>,
}

impl UnaryRun {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

#[allow(clippy::too_many_arguments)]
async fn unary_run(
    server: &Server,
    rpc: Rpc,
    connections: usize,
    in_flight: usize,
    bound: Bound,
    distinct_destinations: bool,
) -> AnyResult<UnaryRun> {
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(connect(server.addr).await?);
    }
    let salt = salt();
    let next = Arc::new(AtomicU64::new(0));
    let response_bytes = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let cpu_before = (server.cpu(), own_cpu());
    let mut tasks = Vec::new();
    for channel in &channels {
        for _ in 0..in_flight {
            let mut client = CallOutcomeServiceClient::new(channel.clone());
            let next = Arc::clone(&next);
            let response_bytes = Arc::clone(&response_bytes);
            tasks.push(tokio::spawn(async move {
                let mut hist = new_hist();
                let (mut ok, mut errors, mut first_error, mut bytes) = (0u64, 0u64, None, 0u64);
                let classify = classify_request();
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    match bound {
                        Bound::For(d) if start.elapsed() >= d => break,
                        Bound::Count(n) if seq >= n => break,
                        _ => {}
                    }
                    let sent = Instant::now();
                    let result = match rpc {
                        Rpc::Classify => client
                            .classify(classify.clone())
                            .await
                            .map(|r| r.get_ref().encoded_len()),
                        Rpc::Report => client
                            .report_outcome(report_request(salt, seq, distinct_destinations))
                            .await
                            .map(|r| r.get_ref().encoded_len()),
                    };
                    let latency = sent.elapsed().as_nanos() as u64;
                    match result {
                        Ok(len) => {
                            ok += 1;
                            hist.saturating_record(latency.max(1));
                            bytes += len as u64;
                        }
                        Err(status) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| status.to_string());
                        }
                    }
                }
                response_bytes.fetch_add(bytes, Ordering::Relaxed);
                (hist, ok, errors, first_error)
            }));
        }
    }
    let mut run = gather(server, tasks, start, cpu_before).await?;
    run.response_bytes = (response_bytes.load(Ordering::Relaxed) / run.ok.max(1)) as usize;
    Ok(run)
}

/// What one load task measured: latencies, successes, failures and the first failure.
type TaskResult = (Histogram<u64>, u64, u64, Option<String>);

/// Merges the tasks of one run and reads the server's CPU and memory after it.
async fn gather(
    server: &Server,
    tasks: Vec<tokio::task::JoinHandle<TaskResult>>,
    start: Instant,
    cpu_before: (Option<Duration>, Duration),
) -> AnyResult<UnaryRun> {
    let mut run = UnaryRun {
        hist: new_hist(),
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        response_bytes: 0,
        server_cpu: None,
        client_cpu: Duration::ZERO,
        rss: None,
    };
    for task in tasks {
        let (hist, ok, errors, first_error) = task.await?;
        run.hist.add(hist)?;
        run.ok += ok;
        run.errors += errors;
        if run.first_error.is_none() {
            run.first_error = first_error;
        }
    }
    run.elapsed = start.elapsed();
    run.server_cpu = server
        .cpu()
        .zip(cpu_before.0)
        .map(|(a, b)| a.saturating_sub(b));
    run.client_cpu = own_cpu().saturating_sub(cpu_before.1);
    run.rss = server.rss();
    Ok(run)
}

fn print_unary(kind: Kind, rpc: Rpc, round: usize, run: &UnaryRun) {
    let secs = run.elapsed.as_secs_f64();
    let pct = |d: Duration| d.as_secs_f64() / secs * 100.0;
    println!(
        "{:<7} {:<13} round {round}: {:>8.0} req/s  p50 {:>6.3} ms  p99 {:>6.3} ms  p999 {:>6.3} ms  \
         ok {} err {}  mean resp {} B  server cpu {}  client cpu {:.0}%  rss {}",
        kind.name(),
        rpc.name(),
        run.rps(),
        ms(run.hist.value_at_quantile(0.50)),
        ms(run.hist.value_at_quantile(0.99)),
        ms(run.hist.value_at_quantile(0.999)),
        run.ok,
        run.errors,
        run.response_bytes,
        run.server_cpu
            .map_or("n/a".into(), |d| format!("{:.0}%", pct(d))),
        pct(run.client_cpu),
        run.rss.map_or("n/a".into(), |b| format!("{:.1} MB", mb(b))),
    );
    if let Some(e) = &run.first_error {
        println!("        first error: {e}");
    }
}

/// The figures of one RPC over all rounds, per server.
struct UnarySummary {
    rpc: Rpc,
    bare_rps: f64,
    service_rps: f64,
    bare: Histogram<u64>,
    service: Histogram<u64>,
    service_rss_max: u64,
}

async fn unary(args: &Args) -> AnyResult<Vec<UnarySummary>> {
    let bare = Server::start(Kind::Bare, args, &[]).await?;
    let service = Server::start(Kind::Service, args, &[]).await?;
    println!(
        "unary: {} connection(s) x {} in flight, {} s per run after {} s warm-up, {} round(s); \
         servers pinned to core 0, client to core 1: {}",
        args.connections,
        args.in_flight,
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64(),
        args.rounds,
        args.pin && cores() >= 2
    );
    let mut summaries = Vec::new();
    for rpc in args.rpcs.clone() {
        let mut sums = HashMap::from([
            (Kind::Bare, (0.0, new_hist())),
            (Kind::Service, (0.0, new_hist())),
        ]);
        let mut rss_max = 0;
        for round in 1..=args.rounds {
            for server in [&bare, &service] {
                if !args.warmup.is_zero() {
                    unary_run(
                        server,
                        rpc,
                        args.connections,
                        args.in_flight,
                        Bound::For(args.warmup),
                        false,
                    )
                    .await?;
                }
                let run = unary_run(
                    server,
                    rpc,
                    args.connections,
                    args.in_flight,
                    Bound::For(args.duration),
                    false,
                )
                .await?;
                print_unary(server.kind, rpc, round, &run);
                let entry = sums.get_mut(&server.kind).expect("both kinds");
                entry.0 += run.rps();
                entry.1.add(&run.hist)?;
                if server.kind == Kind::Service {
                    rss_max = rss_max.max(run.rss.unwrap_or(0));
                }
            }
        }
        let (bare_rps, bare_hist) = sums.remove(&Kind::Bare).expect("bare");
        let (service_rps, service_hist) = sums.remove(&Kind::Service).expect("service");
        let summary = UnarySummary {
            rpc,
            bare_rps: bare_rps / args.rounds as f64,
            service_rps: service_rps / args.rounds as f64,
            bare: bare_hist,
            service: service_hist,
            service_rss_max: rss_max,
        };
        let p = |h: &Histogram<u64>, q| ms(h.value_at_quantile(q));
        println!(
            "== {} over {} round(s): bare {:.0} req/s p50 {:.3} p99 {:.3} p999 {:.3} ms | \
             service {:.0} req/s p50 {:.3} p99 {:.3} p999 {:.3} ms | ratio req/s {:.2} p99 {:.2} | \
             service loaded rss {:.1} MB",
            rpc.name(),
            args.rounds,
            summary.bare_rps,
            p(&summary.bare, 0.5),
            p(&summary.bare, 0.99),
            p(&summary.bare, 0.999),
            summary.service_rps,
            p(&summary.service, 0.5),
            p(&summary.service, 0.99),
            p(&summary.service, 0.999),
            summary.service_rps / summary.bare_rps,
            p(&summary.service, 0.99) / p(&summary.bare, 0.99),
            mb(summary.service_rss_max),
        );
        summaries.push(summary);
    }
    Ok(summaries)
}

// ---------------------------------------------------------------------------------------
// The JetStream backend: one replica, two replicas, a three-node cluster at R1 and R3.

/// A `nats-server` child with JetStream and its own store folder (killed on drop).
struct NatsNode {
    child: std::process::Child,
    port: u16,
    _store: tempfile::TempDir,
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nats_server_bin() -> AnyResult<PathBuf> {
    let path = std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".tools/bin/nats-server"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "nats-server not found at {}: run `.ci/tools.sh nats_server` or set NATS_SERVER_BIN",
            path.display()
        )
        .into())
    }
}

/// Starts `count` nats-servers (a cluster over routes when more than one), pinned to
/// core 0 beside the service, and waits until JetStream answers on each.
async fn start_nats(args: &Args, count: usize) -> AnyResult<Vec<NatsNode>> {
    let bin = nats_server_bin()?;
    let route_ports: Vec<u16> = (0..count).map(|_| free_port()).collect::<Result<_, _>>()?;
    let routes = route_ports
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let pin = args.pin && cores() >= 2 && on_path("taskset");
    let mut nodes = Vec::new();
    for (i, route_port) in route_ports.iter().enumerate() {
        let port = free_port()?;
        let store = tempfile::tempdir()?;
        let mut command = if pin {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]).arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        command
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path());
        if count > 1 {
            command.args([
                "-n",
                &format!("n{i}"),
                "--cluster_name",
                "loadgen",
                "--cluster",
                &format!("nats://127.0.0.1:{route_port}"),
                "--routes",
                &routes,
            ]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        nodes.push(NatsNode {
            child,
            port,
            _store: store,
        });
    }
    for node in &nodes {
        let url = format!("nats://127.0.0.1:{}", node.port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = async {
                let client = async_nats::connect(&url).await.ok()?;
                async_nats::jetstream::new(client)
                    .query_account()
                    .await
                    .ok()
            };
            if tokio::time::timeout(Duration::from_secs(2), ready)
                .await
                .ok()
                .flatten()
                .is_some()
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("nats-server on {url} not ready within 30 s").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(nodes)
}

fn nats_urls(nodes: &[NatsNode]) -> String {
    nodes
        .iter()
        .map(|n| format!("nats://127.0.0.1:{}", n.port))
        .collect::<Vec<_>>()
        .join(",")
}

/// One measured setup of the `nats` command: its service replicas (the load is split
/// across them) and what keeps them alive.
struct NatsSetup {
    name: &'static str,
    replicas: Vec<Server>,
    rps: f64,
    hist: Histogram<u64>,
    errors: u64,
}

/// A service replica on `urls` with the stream and buckets at `replicas`, under names
/// of `setup`'s own (a stream's replica count is fixed once it exists).
async fn nats_replica(args: &Args, urls: &str, replicas: usize, setup: &str) -> AnyResult<Server> {
    let replicas = replicas.to_string();
    let stream = format!("LOADGEN_{setup}");
    let history = format!("loadgen_{setup}_history");
    let reports = format!("loadgen_{setup}_reports");
    let subjects = format!("loadgen_{setup}");
    // The backend and URL as flags: they win over a CALL_OUTCOME_NATS_URL in the
    // environment (the docs runner sets one).
    let mut with_nats = args.clone();
    with_nats.server_args.extend([
        "--backend".into(),
        "nats".into(),
        "--nats-url".into(),
        urls.into(),
    ]);
    Server::start(
        Kind::Service,
        &with_nats,
        &[
            ("CALL_OUTCOME_NATS__REPLICAS", &replicas),
            ("CALL_OUTCOME_NATS__STREAM", &stream),
            ("CALL_OUTCOME_NATS__HISTORY_BUCKET", &history),
            ("CALL_OUTCOME_NATS__REPORTS_BUCKET", &reports),
            ("CALL_OUTCOME_NATS__SUBJECT_PREFIX", &subjects),
        ],
    )
    .await
}

/// `ReportOutcome` at `--connections` x `--in-flight` in all, split evenly across the
/// replicas of a setup (one or two: each gets one connection and its share of the
/// requests in flight), each report new.
async fn split_run(setup: &NatsSetup, in_flight: usize, bound: Bound) -> AnyResult<UnaryRun> {
    let share = (in_flight / setup.replicas.len()).max(1);
    let run = |replica| unary_run(replica, Rpc::Report, 1, share, bound, true);
    match setup.replicas.as_slice() {
        [one] => run(one).await,
        [a, b] => {
            let (a, b) = tokio::join!(run(a), run(b));
            let (mut total, b) = (a?, b?);
            total.hist.add(&b.hist)?;
            total.ok += b.ok;
            total.errors += b.errors;
            total.elapsed = total.elapsed.max(b.elapsed);
            total.first_error = total.first_error.or(b.first_error);
            Ok(total)
        }
        _ => Err("a setup has one or two replicas".into()),
    }
}

/// The five setups of the `nats` command, started; the nats-servers live as long as
/// the returned nodes.
async fn nats_setups(args: &Args) -> AnyResult<(Vec<NatsSetup>, Vec<NatsNode>)> {
    let single = start_nats(args, 1).await?;
    let cluster = start_nats(args, 3).await?;
    let one = nats_urls(&single);
    let three = nats_urls(&cluster);
    let setup = |name, replicas| NatsSetup {
        name,
        replicas,
        rps: 0.0,
        hist: new_hist(),
        errors: 0,
    };
    let setups = vec![
        setup(
            "memory backend",
            vec![Server::start(Kind::Service, args, &[]).await?],
        ),
        setup(
            "1 replica, 1 nats-server",
            vec![nats_replica(args, &one, 1, "single").await?],
        ),
        setup(
            "2 replicas, 1 nats-server",
            vec![
                nats_replica(args, &one, 1, "shared").await?,
                nats_replica(args, &one, 1, "shared").await?,
            ],
        ),
        setup(
            "1 replica, 3-node cluster, R1",
            vec![nats_replica(args, &three, 1, "r1").await?],
        ),
        setup(
            "1 replica, 3-node cluster, R3",
            vec![nats_replica(args, &three, 3, "r3").await?],
        ),
    ];
    // Each replica's first report creates the tenant's stream (on a cluster a replicated
    // stream takes a while to place): done before anything is measured.
    for setup in &setups {
        for replica in &setup.replicas {
            let mut client = CallOutcomeServiceClient::new(connect(replica.addr).await?);
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut seq = 0;
            while let Err(status) = client
                .report_outcome(report_request(salt(), seq, true))
                .await
            {
                if Instant::now() > deadline {
                    return Err(format!("{}: no report acknowledged: {status}", setup.name).into());
                }
                seq += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Ok((setups, single.into_iter().chain(cluster).collect()))
}

async fn nats(args: &Args) -> AnyResult<Vec<(String, f64, f64)>> {
    let (mut setups, nodes) = nats_setups(args).await?;
    let in_flight = args.connections * args.in_flight;
    println!(
        "nats: ReportOutcome, {in_flight} in flight in all (split across a setup's replicas), \
         {} s per run after {} s warm-up, {} round(s); service and nats-servers on core 0, \
         client on core 1: {}",
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64(),
        args.rounds,
        args.pin && cores() >= 2
    );
    for round in 1..=args.rounds {
        for setup in &mut setups {
            if !args.warmup.is_zero() {
                split_run(setup, in_flight, Bound::For(args.warmup)).await?;
            }
            let run = split_run(setup, in_flight, Bound::For(args.duration)).await?;
            println!(
                "{:<30} round {round}: {:>8.0} req/s  p50 {:>6.3} ms  p99 {:>6.3} ms  err {}{}",
                setup.name,
                run.rps(),
                ms(run.hist.value_at_quantile(0.5)),
                ms(run.hist.value_at_quantile(0.99)),
                run.errors,
                run.first_error
                    .as_deref()
                    .map_or(String::new(), |e| format!(" (first: {e})")),
            );
            setup.rps += run.rps();
            setup.hist.add(&run.hist)?;
            setup.errors += run.errors;
        }
    }
    let memory_rps = setups[0].rps / args.rounds as f64;
    let mut summary = Vec::new();
    for setup in &setups {
        let rps = setup.rps / args.rounds as f64;
        let p99 = ms(setup.hist.value_at_quantile(0.99));
        println!(
            "== {:<30} {:>8.0} req/s  p99 {:>6.3} ms  {:.2}x memory  errors {}",
            setup.name,
            rps,
            p99,
            rps / memory_rps,
            setup.errors
        );
        summary.push((setup.name.to_owned(), rps, p99));
    }
    // The services before the nats-servers they use.
    drop(setups);
    drop(nodes);
    Ok(summary)
}

// ---------------------------------------------------------------------------------------
// Fan-out.

const SENT_LABEL: &str = "lg_sent_ns";

struct FanoutRun {
    hist: Histogram<u64>,
    published: u64,
    expected: u64,
    received: u64,
    gaps: u64,
}

impl FanoutRun {
    fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }
}

async fn fanout_run(
    server: &Server,
    subscribers: usize,
    rate: u32,
    secs: f64,
) -> AnyResult<FanoutRun> {
    // Warm-up before anyone subscribes: the first number of each country costs the
    // service its phone-number metadata and patterns (tens of milliseconds, once).
    let warm = unary_run(server, Rpc::Report, 1, 8, Bound::Count(200), false).await?;
    if warm.errors > 0 {
        return Err(format!("fan-out warm-up failed: {:?}", warm.first_error).into());
    }
    let base = Instant::now();
    let connections = subscribers.div_ceil(100).max(1);
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(connect(server.addr).await?);
    }
    let received = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..subscribers {
        let mut client = CallOutcomeServiceClient::new(channels[i % connections].clone());
        let mut stream = client
            .subscribe_outcomes(pb::SubscribeOutcomesRequest {
                start: pb::StartPosition::New as i32,
                ..Default::default()
            })
            .await?
            .into_inner();
        let received = Arc::clone(&received);
        let mut stop_rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = new_hist();
            let mut gaps = 0u64;
            loop {
                let message = tokio::select! {
                    m = stream.next() => m,
                    _ = stop_rx.changed() => break,
                };
                let Some(Ok(message)) = message else { break };
                match message.kind {
                    Some(pb::subscribe_outcomes_response::Kind::Event(event)) => {
                        let now = base.elapsed().as_nanos() as u64;
                        if let Some(sent) = event
                            .outcome
                            .as_ref()
                            .and_then(|o| o.labels.get(SENT_LABEL))
                            .and_then(|s| s.parse::<u64>().ok())
                        {
                            hist.saturating_record(now.saturating_sub(sent).max(1));
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(pb::subscribe_outcomes_response::Kind::Gap(_)) => gaps += 1,
                    _ => {}
                }
            }
            (hist, gaps)
        }));
    }
    // Subscriptions are open (headers received); let the streams settle.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let reporter = CallOutcomeServiceClient::new(connect(server.addr).await?);
    let total = (f64::from(rate) * secs).round() as u64;
    let published = Arc::new(AtomicU64::new(0));
    let salt = salt();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    let mut sends = Vec::new();
    for seq in 0..total {
        ticker.tick().await;
        let mut client = reporter.clone();
        let published = Arc::clone(&published);
        sends.push(tokio::spawn(async move {
            let mut request = report_request(salt, seq, false);
            let outcome = request.outcome.as_mut().expect("outcome");
            // A decline, so that the default subscription filter passes it.
            outcome.sip = Some(pb::SipResponse {
                code: Some(603),
                ..Default::default()
            });
            outcome.labels.insert(
                SENT_LABEL.into(),
                (base.elapsed().as_nanos() as u64).to_string(),
            );
            if client.report_outcome(request).await.is_ok() {
                published.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for send in sends {
        send.await?;
    }
    let published = published.load(Ordering::Relaxed);
    let expected = published * subscribers as u64;
    let drain = Instant::now() + Duration::from_secs(5);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    let mut run = FanoutRun {
        hist: new_hist(),
        published,
        expected,
        received: 0,
        gaps: 0,
    };
    for task in tasks {
        let (hist, gaps) = task.await?;
        run.hist.add(hist)?;
        run.gaps += gaps;
    }
    run.received = received.load(Ordering::Relaxed);
    Ok(run)
}

struct FanoutSummary {
    subscribers: usize,
    bare: FanoutRun,
    service: FanoutRun,
}

async fn fanout(args: &Args) -> AnyResult<Vec<FanoutSummary>> {
    let secs = args.fanout_secs as f64;
    println!(
        "fan-out: {} events/s for {} s per run; subscribers {:?}",
        args.rate, args.fanout_secs, args.subscribers
    );
    let mut summaries = Vec::new();
    for &n in &args.subscribers {
        // Fresh servers per size: no subscriber or event of an earlier size remains.
        let bare_server = Server::start(Kind::Bare, args, &[]).await?;
        let bare = fanout_run(&bare_server, n, args.rate, secs).await?;
        drop(bare_server);
        let service_server = Server::start(Kind::Service, args, &[]).await?;
        let service = fanout_run(&service_server, n, args.rate, secs).await?;
        drop(service_server);
        for (kind, run) in [(Kind::Bare, &bare), (Kind::Service, &service)] {
            println!(
                "{:<7} {:>5} subscribers: published {} delivered {}/{} lost {} gaps {}  \
                 p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
                kind.name(),
                n,
                run.published,
                run.received,
                run.expected,
                run.lost(),
                run.gaps,
                ms(run.hist.value_at_quantile(0.5)),
                ms(run.hist.value_at_quantile(0.99)),
                ms(run.hist.max()),
            );
        }
        println!(
            "== fan-out {n}: service/bare p50 {:.2} p99 {:.2}",
            ms(service.hist.value_at_quantile(0.5)) / ms(bare.hist.value_at_quantile(0.5)),
            ms(service.hist.value_at_quantile(0.99)) / ms(bare.hist.value_at_quantile(0.99)),
        );
        summaries.push(FanoutSummary {
            subscribers: n,
            bare,
            service,
        });
    }
    Ok(summaries)
}

// ---------------------------------------------------------------------------------------
// Memory.

struct MemorySummary {
    idle: u64,
    per_subscriber: f64,
    after_destinations: u64,
    per_destination: f64,
    history_only_after: u64,
    history_only_per_destination: f64,
}

async fn settle_rss(server: &Server) -> AnyResult<u64> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    server
        .rss()
        .filter(|&b| b > 0)
        .ok_or_else(|| "cannot read the server's VmRSS (is it a child process?)".into())
}

/// Reports `count` distinct destinations; returns RSS before and after.
async fn fill_destinations(server: &Server, count: u64) -> AnyResult<(u64, u64)> {
    let before = settle_rss(server).await?;
    let started = Instant::now();
    let run = unary_run(server, Rpc::Report, 1, 64, Bound::Count(count), true).await?;
    if run.errors > 0 || run.ok != count {
        return Err(format!(
            "filling destinations: {} ok, {} errors ({:?})",
            run.ok, run.errors, run.first_error
        )
        .into());
    }
    println!(
        "memory: reported {count} distinct destinations in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok((before, settle_rss(server).await?))
}

async fn memory(args: &Args) -> AnyResult<MemorySummary> {
    if args.target.is_some() {
        return Err("memory needs a child server (no --target)".into());
    }
    let service = Server::start(Kind::Service, args, &[]).await?;
    let idle = settle_rss(&service).await?;
    println!("memory: idle rss {:.1} MB", mb(idle));

    let k = args.idle_subscribers.max(1);
    let connections = k.div_ceil(100);
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(connect(service.addr).await?);
    }
    let mut streams = Vec::new();
    for i in 0..k {
        let mut client = CallOutcomeServiceClient::new(channels[i % connections].clone());
        streams.push(
            client
                .subscribe_outcomes(pb::SubscribeOutcomesRequest::default())
                .await?
                .into_inner(),
        );
    }
    let with_subscribers = settle_rss(&service).await?;
    let per_subscriber = with_subscribers.saturating_sub(idle) as f64 / k as f64;
    println!(
        "memory: {k} idle subscribers: rss {:.1} MB, {:.0} B per subscriber",
        mb(with_subscribers),
        per_subscriber
    );
    drop(streams);
    drop(channels);

    let d = args.destinations.max(1);
    let (before, after) = fill_destinations(&service, d).await?;
    let per_destination = after.saturating_sub(before) as f64 / d as f64;
    println!(
        "memory: {d} destinations (defaults: idempotency keys and event ring included): \
         rss {:.1} MB, {:.0} B per destination",
        mb(after),
        per_destination
    );
    drop(service);

    // The same with the idempotency cache and event ring kept tiny: the history alone.
    let service = Server::start(
        Kind::Service,
        args,
        &[
            ("CALL_OUTCOME_STORE__MAX_REPORT_KEYS", "1000"),
            ("CALL_OUTCOME_EVENTS__MAX_EVENTS", "1000"),
        ],
    )
    .await?;
    let (h_before, h_after) = fill_destinations(&service, d).await?;
    let history_only_per_destination = h_after.saturating_sub(h_before) as f64 / d as f64;
    println!(
        "memory: {d} destinations (history only: 1,000 idempotency keys, 1,000 events): \
         rss {:.1} MB, {:.0} B per destination",
        mb(h_after),
        history_only_per_destination
    );
    Ok(MemorySummary {
        idle,
        per_subscriber,
        after_destinations: after,
        per_destination,
        history_only_after: h_after,
        history_only_per_destination,
    })
}

// ---------------------------------------------------------------------------------------
// h2load cross-check.

/// The gRPC frame of the Classify request: 5-byte prefix (uncompressed, length) + body.
fn grpc_frame() -> Vec<u8> {
    let body = classify_request().encode_to_vec();
    let mut frame = Vec::with_capacity(body.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

fn h2load_command(args: &Args, body: &std::path::Path, addr: SocketAddr) -> Vec<String> {
    let mut command = Vec::new();
    if args.pin && cores() >= 2 {
        command.extend(["taskset", "-c", "1"].map(String::from));
    }
    command.extend(
        [
            "h2load",
            "-n",
            &args.h2load_requests.to_string(),
            "-c",
            &args.connections.to_string(),
            "-m",
            &args.in_flight.to_string(),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-d",
            &body.display().to_string(),
            &format!("http://{addr}/calloutcome.v1.CallOutcomeService/Classify"),
        ]
        .map(String::from),
    );
    command
}

/// `words` as one shell command line (words with spaces quoted).
fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if w.contains(' ') {
                format!("'{w}'")
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn h2load(args: &Args) -> AnyResult<()> {
    let body = std::env::temp_dir().join("call-outcome-classify.grpc");
    std::fs::write(&body, grpc_frame())?;
    println!(
        "h2load: wrote the gRPC Classify frame to {}",
        body.display()
    );
    let bare = Server::start(Kind::Bare, args, &[]).await?;
    let service = Server::start(Kind::Service, args, &[]).await?;
    if !on_path("h2load") {
        println!("h2load is not installed (Debian: apt-get install -y nghttp2-client); command:");
        println!(
            "  {}",
            shell_words(&h2load_command(args, &body, service.addr))
        );
        return Ok(());
    }
    let mut rates = HashMap::new();
    for round in 1..=args.rounds {
        for server in [&bare, &service] {
            let command = h2load_command(args, &body, server.addr);
            let output = Command::new(&command[0]).args(&command[1..]).output()?;
            let text = String::from_utf8_lossy(&output.stdout);
            let finished = text
                .lines()
                .find(|l| l.starts_with("finished in"))
                .unwrap_or("");
            let requests = text
                .lines()
                .find(|l| l.starts_with("requests:"))
                .unwrap_or("");
            let status = text
                .lines()
                .find(|l| l.starts_with("status codes:"))
                .unwrap_or("");
            println!(
                "h2load {:<7} round {round}: {finished} | {requests} | {status}",
                server.kind.name()
            );
            let rps: f64 = finished
                .split(',')
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("cannot read h2load output:\n{text}"))?;
            *rates.entry(server.kind.name()).or_insert(0.0) += rps / args.rounds as f64;
        }
    }
    println!(
        "  command: {}",
        shell_words(&h2load_command(args, &body, service.addr))
    );
    println!(
        "== h2load Classify: bare {:.0} req/s, service {:.0} req/s, ratio {:.2}",
        rates["bare"],
        rates["service"],
        rates["service"] / rates["bare"]
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// all / smoke.

async fn all(args: &Args) -> AnyResult<()> {
    let unary = unary(args).await?;
    let fanout = fanout(args).await?;
    let memory = memory(args).await?;
    h2load(args).await?;
    println!("\n| metric | bare | service | ratio |");
    println!("|---|---|---|---|");
    let p = |h: &Histogram<u64>, q| ms(h.value_at_quantile(q));
    for u in &unary {
        println!(
            "| {} req/s | {:.0} | {:.0} | {:.2} |",
            u.rpc.name(),
            u.bare_rps,
            u.service_rps,
            u.service_rps / u.bare_rps
        );
        for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)] {
            println!(
                "| {} {label} (ms) | {:.3} | {:.3} | {:.2} |",
                u.rpc.name(),
                p(&u.bare, q),
                p(&u.service, q),
                p(&u.service, q) / p(&u.bare, q)
            );
        }
    }
    for f in &fanout {
        for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
            println!(
                "| fan-out {} subscribers {label} (ms) | {:.3} | {:.3} | {:.2} |",
                f.subscribers,
                p(&f.bare.hist, q),
                p(&f.service.hist, q),
                p(&f.service.hist, q) / p(&f.bare.hist, q)
            );
        }
        println!(
            "| fan-out {} subscribers lost | {} of {} | {} of {} | |",
            f.subscribers,
            f.bare.lost(),
            f.bare.expected,
            f.service.lost(),
            f.service.expected
        );
    }
    let rss_loaded = unary.iter().map(|u| u.service_rss_max).max().unwrap_or(0);
    println!("| idle RSS (MB) | | {:.1} | |", mb(memory.idle));
    println!(
        "| loaded RSS, unary runs (MB) | | {:.1} | |",
        mb(rss_loaded)
    );
    println!(
        "| per idle subscriber (B) | | {:.0} | |",
        memory.per_subscriber
    );
    println!(
        "| RSS after {} destinations, defaults (MB) | | {:.1} ({:.0} B each) | |",
        args.destinations,
        mb(memory.after_destinations),
        memory.per_destination
    );
    println!(
        "| RSS after {} destinations, history only (MB) | | {:.1} ({:.0} B each) | |",
        args.destinations,
        mb(memory.history_only_after),
        memory.history_only_per_destination
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Provider webhooks.

/// The demo secrets of the webhook run (a throwaway config in the temp folder).
const WEBHOOK_TOKEN: &str = "loadgen-twilio-token";
const WEBHOOK_SEED: [u8; 32] = [5; 32];
const WEBHOOK_BASE: &str = "http://loadgen.invalid";

#[derive(Debug, Clone, Copy)]
enum Hook {
    Telnyx,
    Twilio,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Telnyx => "telnyx",
            Hook::Twilio => "twilio",
        }
    }
}

/// The service with a webhook listener for tenant `default` (Telnyx and Twilio); the
/// webhook address is returned beside it.
async fn webhook_service(args: &Args) -> AnyResult<(Server, SocketAddr, PathBuf)> {
    use call_outcome::auth::webhook::sign;
    let (public, _) = sign::telnyx_keys(WEBHOOK_SEED).map_err(|e| e.to_string())?;
    let hooks = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let path = std::env::temp_dir().join(format!("loadgen-webhooks-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        format!(
            "[webhooks]\nlisten = \"{hooks}\"\npublic_base_url = \"{WEBHOOK_BASE}\"\n\
             [webhooks.tenants.default.telnyx]\npublic_keys = [\"{public}\"]\n\
             [webhooks.tenants.default.twilio]\nauth_tokens = [\"{WEBHOOK_TOKEN}\"]\n"
        ),
    )?;
    let mut with_config = args.clone();
    with_config.server_args = vec!["--config".into(), path.display().to_string()];
    with_config
        .server_args
        .extend(args.server_args.iter().cloned());
    let server = Server::start(Kind::Service, &with_config, &[]).await?;
    Ok((server, hooks, path))
}

/// One signed terminal callback, new each time (`seq`), as the provider sends it: the
/// request head and the body.
fn webhook_request(
    hook: Hook,
    signer: &call_outcome::auth::webhook::sign::TelnyxSigner,
    salt: u64,
    seq: u64,
) -> AnyResult<(axum::http::Request<()>, bytes::Bytes)> {
    use call_outcome::auth::webhook::sign;
    let to = destination(seq, false);
    let request = axum::http::Request::post(format!(
        "{WEBHOOK_BASE}/v1/webhooks/{}/default",
        hook.name()
    ));
    Ok(match hook {
        Hook::Telnyx => {
            let body = format!(
                r#"{{"data":{{"record_type":"event","event_type":"call.hangup","id":"lg-{salt:x}-{seq}","occurred_at":"2026-05-19T23:30:23.738431Z","payload":{{"call_control_id":"v3:lg-{salt:x}-{seq}","call_leg_id":"b0457f28-53da-11f1-9961-02420aef271f","call_session_id":"b04574f6-53da-11f1-8e4b-02420aef271f","connection_id":"2963572552552678752","client_state":null,"from":"+15129342627","to":"{to}","start_time":"2026-05-19T23:30:15.038431Z","end_time":"2026-05-19T23:30:23.738431Z","state":"hangup","hangup_cause":"{}","hangup_source":"callee","sip_hangup_cause":"{}"}}}},"meta":{{"attempt":1,"delivered_to":"{WEBHOOK_BASE}/v1/webhooks/telnyx/default"}}}}"#,
                if seq.is_multiple_of(2) {
                    "call_rejected"
                } else {
                    "user_busy"
                },
                if seq.is_multiple_of(2) { "603" } else { "486" },
            );
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs()
                .to_string();
            let signature = signer.sign(&ts, body.as_bytes());
            (
                request
                    .header("content-type", "application/json")
                    .header("telnyx-timestamp", ts)
                    .header("telnyx-signature-ed25519", signature)
                    .body(())?,
                bytes::Bytes::from(body),
            )
        }
        Hook::Twilio => {
            let params = call_outcome::CallbackParams(
                [
                    (
                        "AccountSid",
                        "AC0123456789abcdef0123456789abcdef".to_owned(),
                    ),
                    ("ApiVersion", "2010-04-01".to_owned()),
                    ("CallSid", format!("CA{salt:x}{seq}")),
                    (
                        "CallStatus",
                        if seq.is_multiple_of(2) {
                            "busy"
                        } else {
                            "failed"
                        }
                        .to_owned(),
                    ),
                    ("CallbackSource", "call-progress-events".to_owned()),
                    ("Direction", "outbound-api".to_owned()),
                    ("From", "+12013800532".to_owned()),
                    ("SequenceNumber", "3".to_owned()),
                    (
                        "SipResponseCode",
                        if seq.is_multiple_of(2) { "486" } else { "603" }.to_owned(),
                    ),
                    ("Timestamp", "Tue, 01 Nov 2016 01:59:13 +0000".to_owned()),
                    ("To", to),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            );
            let url = format!("{WEBHOOK_BASE}/v1/webhooks/twilio/default");
            let signature = sign::twilio(WEBHOOK_TOKEN, &url, &params);
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params.0.iter())
                .finish();
            (
                request
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("x-twilio-signature", signature)
                    .body(())?,
                bytes::Bytes::from(body),
            )
        }
    })
}

/// Posts signed callbacks over `connections` HTTP/2 connections, `in_flight` each.
async fn webhook_run(
    server: &Server,
    hooks: SocketAddr,
    hook: Hook,
    connections: usize,
    in_flight: usize,
    bound: Bound,
) -> AnyResult<UnaryRun> {
    let (_, signer) =
        call_outcome::auth::webhook::sign::telnyx_keys(WEBHOOK_SEED).map_err(|e| e.to_string())?;
    let signer = Arc::new(signer);
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        let tcp = tokio::net::TcpStream::connect(hooks).await?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = h2::client::handshake(tcp).await?;
        tokio::spawn(connection);
        senders.push(sender);
    }
    let salt = salt();
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let cpu_before = (server.cpu(), own_cpu());
    let mut tasks = Vec::new();
    for sender in &senders {
        for _ in 0..in_flight {
            let sender = sender.clone();
            let next = Arc::clone(&next);
            let signer = Arc::clone(&signer);
            tasks.push(tokio::spawn(async move {
                let mut hist = new_hist();
                let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None::<String>);
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    match bound {
                        Bound::For(d) if start.elapsed() >= d => break,
                        Bound::Count(n) if seq >= n => break,
                        _ => {}
                    }
                    let sent = Instant::now();
                    let result: AnyResult<(u16, Vec<u8>)> = async {
                        let (head, body) = webhook_request(hook, &signer, salt, seq)?;
                        let mut ready = sender.clone().ready().await?;
                        let (response, mut stream) = ready.send_request(head, false)?;
                        stream.send_data(body, true)?;
                        let response = response.await?;
                        let status = response.status().as_u16();
                        let mut body = response.into_body();
                        let mut bytes = Vec::new();
                        while let Some(chunk) = body.data().await {
                            let chunk = chunk?;
                            let _ = body.flow_control().release_capacity(chunk.len());
                            bytes.extend_from_slice(&chunk);
                        }
                        Ok((status, bytes))
                    }
                    .await;
                    let latency = sent.elapsed().as_nanos() as u64;
                    match result {
                        Ok((200, body))
                            if body.starts_with(br#"{"action""#)
                                && memfind(&body, b"\"accepted\"") =>
                        {
                            ok += 1;
                            hist.saturating_record(latency.max(1));
                        }
                        Ok((status, body)) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| {
                                format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim())
                            });
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                (hist, ok, errors, first_error)
            }));
        }
    }
    let run = gather(server, tasks, start, cpu_before).await?;
    Ok(run)
}

fn memfind(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn print_webhook(hook: Hook, round: usize, run: &UnaryRun) {
    let secs = run.elapsed.as_secs_f64();
    let pct = |d: Duration| d.as_secs_f64() / secs * 100.0;
    println!(
        "webhook {:<13} round {round}: {:>8.0} req/s  p50 {:>6.3} ms  p99 {:>6.3} ms  p999 {:>6.3} ms  \
         ok {} err {}  server cpu {}  client cpu {:.0}%",
        hook.name(),
        run.rps(),
        ms(run.hist.value_at_quantile(0.50)),
        ms(run.hist.value_at_quantile(0.99)),
        ms(run.hist.value_at_quantile(0.999)),
        run.ok,
        run.errors,
        run.server_cpu
            .map_or("n/a".into(), |d| format!("{:.0}%", pct(d))),
        pct(run.client_cpu),
    );
    if let Some(e) = &run.first_error {
        println!("        first error: {e}");
    }
}

/// Accepted webhooks/s and p99 of signed Telnyx and Twilio callbacks against
/// `ReportOutcome` of the same service, alternating, in one run.
async fn webhooks(args: &Args) -> AnyResult<()> {
    let (service, hooks, config) = webhook_service(args).await?;
    println!(
        "webhooks: {} connection(s) x {} in flight, {} s per run after {} s warm-up, {} round(s); \
         each request a new signed terminal callback (every one recorded)",
        args.connections,
        args.in_flight,
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64(),
        args.rounds
    );
    let mut totals: HashMap<&str, (f64, Histogram<u64>)> = HashMap::new();
    for round in 1..=args.rounds {
        let warm = Bound::For(args.warmup);
        let measured = Bound::For(args.duration);
        unary_run(
            &service,
            Rpc::Report,
            args.connections,
            args.in_flight,
            warm,
            false,
        )
        .await?;
        let run = unary_run(
            &service,
            Rpc::Report,
            args.connections,
            args.in_flight,
            measured,
            false,
        )
        .await?;
        print_unary(Kind::Service, Rpc::Report, round, &run);
        let entry = totals
            .entry("ReportOutcome")
            .or_insert_with(|| (0.0, new_hist()));
        entry.0 += run.rps();
        entry.1.add(&run.hist)?;
        for hook in [Hook::Telnyx, Hook::Twilio] {
            webhook_run(
                &service,
                hooks,
                hook,
                args.connections,
                args.in_flight,
                warm,
            )
            .await?;
            let run = webhook_run(
                &service,
                hooks,
                hook,
                args.connections,
                args.in_flight,
                measured,
            )
            .await?;
            print_webhook(hook, round, &run);
            let entry = totals
                .entry(hook.name())
                .or_insert_with(|| (0.0, new_hist()));
            entry.0 += run.rps();
            entry.1.add(&run.hist)?;
        }
    }
    let rounds = args.rounds as f64;
    let grpc = totals.get("ReportOutcome").map_or(0.0, |t| t.0 / rounds);
    for name in ["ReportOutcome", "telnyx", "twilio"] {
        if let Some((rps, hist)) = totals.get(name) {
            println!(
                "summary {name:<13} {:>8.0} req/s  p99 {:>6.3} ms  ({:.2} of ReportOutcome)",
                rps / rounds,
                ms(hist.value_at_quantile(0.99)),
                rps / rounds / grpc.max(1.0)
            );
        }
    }
    drop(service);
    let _ = std::fs::remove_file(config);
    Ok(())
}

/// Correctness only, tiny counts, no timing: every request succeeds on both servers
/// and every signed webhook is accepted,
/// fan-out at a low rate loses nothing, memory readings are positive.
async fn smoke(args: &Args) -> AnyResult<()> {
    {
        let (service, hooks, config) = webhook_service(args).await?;
        for hook in [Hook::Telnyx, Hook::Twilio] {
            let run = webhook_run(&service, hooks, hook, 2, 4, Bound::Count(100)).await?;
            print_webhook(hook, 1, &run);
            if run.ok != 100 || run.errors != 0 {
                return Err(format!("webhook {}: {} accepted of 100", hook.name(), run.ok).into());
            }
        }
        let _ = std::fs::remove_file(config);
    }
    let bare = Server::start(Kind::Bare, args, &[]).await?;
    let service = Server::start(Kind::Service, args, &[]).await?;
    for rpc in [Rpc::Classify, Rpc::Report] {
        for server in [&bare, &service] {
            let run = unary_run(server, rpc, 2, 4, Bound::Count(200), false).await?;
            print_unary(server.kind, rpc, 1, &run);
            if run.ok != 200 || run.errors != 0 || run.response_bytes == 0 {
                return Err(format!(
                    "{} {}: {} ok of 200",
                    server.kind.name(),
                    rpc.name(),
                    run.ok
                )
                .into());
            }
        }
    }
    drop((bare, service));
    for kind in [Kind::Bare, Kind::Service] {
        let server = Server::start(kind, args, &[]).await?;
        let run = fanout_run(&server, 10, 20, 1.0).await?;
        println!(
            "{} fan-out 10 subscribers: published {} delivered {}/{} gaps {}",
            kind.name(),
            run.published,
            run.received,
            run.expected,
            run.gaps
        );
        if run.published != 20 || run.lost() != 0 || run.gaps != 0 {
            return Err(format!("{} fan-out lost events", kind.name()).into());
        }
    }
    {
        let (setups, nodes) = nats_setups(args).await?;
        for setup in &setups {
            let run = split_run(setup, 8, Bound::Count(100)).await?;
            let wanted = 100 * setup.replicas.len() as u64;
            println!("nats {}: {} ok of {wanted}", setup.name, run.ok);
            if run.ok != wanted || run.errors != 0 {
                return Err(format!(
                    "nats {}: {} ok of {wanted}, first error {:?}",
                    setup.name, run.ok, run.first_error
                )
                .into());
            }
        }
        drop(setups);
        drop(nodes);
    }
    let small = Args {
        idle_subscribers: 20,
        destinations: 500,
        ..args.clone()
    };
    let memory = memory(&small).await?;
    if memory.idle == 0 || memory.after_destinations == 0 || memory.history_only_after == 0 {
        return Err("memory readings must be positive".into());
    }
    let body = std::env::temp_dir().join("call-outcome-smoke.grpc");
    let frame = grpc_frame();
    std::fs::write(&body, &frame)?;
    if frame[0] != 0
        || u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize != frame.len() - 5
    {
        return Err("bad gRPC frame".into());
    }
    println!("smoke ok");
    Ok(())
}
