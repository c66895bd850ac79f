//! The command line as a person uses it: the real binary, offline and against an
//! in-process server.

mod common;

use std::io::Write;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_call-outcome"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn classify_603_offline_explains_itself() {
    let o = run(&["classify", "--sip-code", "603"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("603 Decline"), "{text}");
    assert!(text.contains("declined"), "{text}");
    assert!(text.contains("Decision"), "{text}");
}

#[test]
fn classify_json_uses_the_reference_vocabulary() {
    let o = run(&[
        "classify",
        "--sip-code",
        "503",
        "--retry-after",
        "120",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON object");
    assert_eq!(v["category"], "network_error");
    assert_eq!(v["fault"], "network");
    assert_eq!(v["retryable"], "now_alternate_route");
    assert_eq!(v["retry_after_seconds"], 120);
    assert_eq!(v["retry_after_scope"], "route");
    assert!(v["decision"]["action"].is_string());
    assert!(v["decision"]["rule"].is_string());
}

#[test]
fn classify_reads_reason_headers_providers_and_raw_files() {
    let o = run(&[
        "classify",
        "--sip-code",
        "480",
        "--reason-header",
        "Q.850;cause=19",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["category"], "no_answer");

    let o = run(&[
        "classify",
        "--provider",
        "twilio",
        "--provider-cause",
        "no-answer",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["category"], "no_answer");

    let mut raw = tempfile::NamedTempFile::new().expect("temp");
    raw.write_all(b"SIP/2.0 607 Unwanted\r\nCall-ID: x\r\n\r\n")
        .expect("write");
    let path = raw.path().to_str().expect("utf-8 path");
    let o = run(&["classify", "--raw-file", path, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["category"], "rejected_unwanted");
    assert_eq!(v["fault"], "callee_choice");
}

#[test]
fn an_invalid_outcome_exits_non_zero_with_the_reason() {
    let o = run(&["classify", "--sip-code", "180"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("provisional"), "{}", stderr(&o));
    let o = run(&["classify"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("neither a SIP code nor a provider cause"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_config_points_at_the_offending_line() {
    let o = run(&["check-config", "examples/policy.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Put an unknown category into an existing rule: the error must name its line.
    let good = std::fs::read_to_string("examples/policy.toml").expect("example policy");
    let target = "category = [\"declined\"]";
    let line = good
        .lines()
        .position(|l| l.trim() == target)
        .expect("a declined rule")
        + 1;
    let broken = good.replacen(target, "category = [\"declined\", \"maybe\"]", 1);
    let mut bad = tempfile::NamedTempFile::new().expect("temp");
    bad.write_all(broken.as_bytes()).expect("write");
    let o = run(&["check-config", bad.path().to_str().expect("path")]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!(":{line}:")),
        "line {line} expected in: {err}"
    );
    assert!(err.contains("maybe"), "{err}");
}

#[test]
fn the_example_service_config_is_valid() {
    let o = run(&["check-config", "examples/config.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("valid service config"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn the_example_policy_is_the_built_in_one() {
    let example = std::fs::read_to_string("examples/policy.toml").expect("example policy");
    assert_eq!(example, call_outcome::policy::DEFAULT_POLICY);
}

#[test]
fn check_config_validates_service_configs_and_their_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("service.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:50051\"\npolicy_file = \"policy.toml\"\n",
    )
    .expect("write");
    std::fs::copy("examples/policy.toml", dir.path().join("policy.toml")).expect("copy");
    let o = run(&["check-config", config.to_str().expect("path")]);
    assert!(o.status.success(), "{}", stderr(&o));

    std::fs::write(
        &config,
        "listen = \"127.0.0.1:50051\"\n[store]\nhistory_window = 5\n",
    )
    .expect("write");
    let o = run(&["check-config", config.to_str().expect("path")]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("service.toml:3:"), "{}", stderr(&o));
}

#[tokio::test]
async fn report_calls_a_running_server() {
    let server = common::start().await;
    let url = server.url();
    let args = [
        "report",
        "--server",
        url.as_str(),
        "--call-id",
        "cli-1",
        "--attempt",
        "1",
        "--to",
        "+1 (555) 010-4477",
        "--sip-code",
        "486",
        "--label",
        "campaign=spring",
        "--json",
    ];
    let first = tokio::task::spawn_blocking({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        move || bin().args(&args).output().expect("runs")
    })
    .await
    .expect("join");
    assert!(first.status.success(), "{}", stderr(&first));
    let v: serde_json::Value = serde_json::from_str(&stdout(&first)).expect("json");
    assert_eq!(v["category"], "busy");
    assert_eq!(v["duplicate"], false);
    assert_eq!(v["destination"], "+15550104477");

    let second = tokio::task::spawn_blocking({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        move || bin().args(&args).output().expect("runs")
    })
    .await
    .expect("join");
    let v2: serde_json::Value = serde_json::from_str(&stdout(&second)).expect("json");
    assert_eq!(v2["duplicate"], true);
    assert_eq!(v2["event_id"], v["event_id"]);

    let bad = tokio::task::spawn_blocking(move || {
        bin()
            .args([
                "report",
                "--server",
                url.as_str(),
                "--call-id",
                "x",
                "--to",
                "1",
                "--sip-code",
                "99",
            ])
            .output()
            .expect("runs")
    })
    .await
    .expect("join");
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("outcome.sip.code"),
        "{}",
        stderr(&bad)
    );
}

#[tokio::test]
async fn subscribe_prints_json_lines_and_resumes_across_a_restart() {
    use std::io::{BufRead, BufReader};
    let server = common::start().await;
    let addr = server.addr;
    let mut child = bin()
        .args(["subscribe", "--server", &server.url(), "--max-events", "2"])
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
    // Report once the subscription is open (the server's own gauge says so).
    common::wait_for_subscribers(&server, 1).await;
    let mut client = common::client(&server).await;
    client
        .report_outcome(common::report(common::outcome(
            "sub-1",
            1,
            "+15550104477",
            603,
        )))
        .await
        .expect("report");
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), lines.recv())
        .await
        .expect("a line within 30 s")
        .expect("subscriber running");
    let first: serde_json::Value = serde_json::from_str(&first).expect("json");
    assert_eq!(first["category"], "declined");
    assert_eq!(first["tenant"], "default");
    assert!(
        first["resume_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert_eq!(first["outcome"]["to"], "+15550104477");

    // Restart the server on the same port: the subscriber reconnects with its last token
    // and, the in-memory log being a new incarnation, says so.
    drop(client);
    server.stop().await.expect("stop");
    let config = call_outcome::config::Config {
        listen: addr,
        admin_listen: "127.0.0.1:0".into(),
        ..Default::default()
    };
    let restarted = call_outcome::server::RunningServer::start(config)
        .await
        .expect("restart on the same port");
    common::wait_for_subscribers(&restarted, 1).await;
    let mut client = common::client(&restarted).await;
    client
        .report_outcome(common::report(common::outcome(
            "after-1",
            1,
            "+15550104478",
            607,
        )))
        .await
        .expect("report");
    let second = tokio::time::timeout(std::time::Duration::from_secs(30), lines.recv())
        .await
        .expect("a line within 30 s")
        .expect("subscriber running");
    let second: serde_json::Value = serde_json::from_str(&second).expect("json");
    assert_eq!(second["category"], "rejected_unwanted");
    assert_eq!(second["outcome"]["call_id"], "after-1");
    // Bounded: a subscriber that does not exit after its second event is a failure,
    // not a hang.
    let pid = child.id();
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .unwrap_or_else(|_| {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
        panic!("the subscriber did not exit after --max-events 2");
    })
    .expect("join")
    .expect("exits");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("reconnecting"), "{err}");
    assert!(err.contains("epoch_changed"), "{err}");
    restarted.stop().await.expect("stop");
}

/// #16 item 6: a fatal error of `serve` is logged once, in the log's format (JSON for a
/// collector), and not printed again as plain text.
#[test]
fn a_fatal_serve_error_is_logged_once_in_the_log_format() {
    let dir = tempfile::tempdir().expect("dir");
    let policy = dir.path().join("bad.toml");
    std::fs::write(
        &policy,
        "[[rules]]\nname = \"x\"\ncategory = [\"maybe\"]\naction = \"stop\"\nexplanation = \"x\"\n",
    )
    .expect("write");
    let out = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", ""])
        .args(["--log-format", "json", "--policy"])
        .arg(&policy)
        .output()
        .expect("binary runs");
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("maybe")).collect();
    assert_eq!(lines.len(), 1, "once: {err}");
    let line: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON log line");
    assert_eq!(line["level"], "ERROR");
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown category `maybe`")),
        "{line}"
    );
    assert!(!err.contains("error: "), "no plain-text copy: {err}");
}

/// `classify --label k=v` (repeatable), as `report` has it: a rule matching a label and
/// a tenant's no-failover code decide offline exactly as the service would.
#[test]
fn classify_takes_labels_and_applies_the_tenants_no_failover_codes() {
    let dir = tempfile::tempdir().expect("dir");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[rules]]\nname = \"carrier-x-failover\"\nlabels = { carrier = \"x\" }\n\
         action = \"retry_now_alternate_route\"\nexplanation = \"Carrier X: another route.\"\n\
         [[rules]]\nname = \"any\"\naction = \"stop\"\nexplanation = \"x\"\n\
         [tenants.acme]\nno_failover_codes = [486]\n",
    )
    .expect("policy");
    let policy = policy.to_str().expect("utf-8");
    let decide = |args: &[&str]| {
        let mut all = vec!["classify", "--policy", policy, "--json"];
        all.extend_from_slice(args);
        let o = run(&all);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
        (
            v["decision"]["rule"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            v["decision"]["action"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    let labelled = [
        "--sip-code",
        "486",
        "--label",
        "carrier=x",
        "--label",
        "trunk=t1",
    ];
    assert_eq!(
        decide(&labelled),
        (
            "carrier-x-failover".into(),
            "retry_now_alternate_route".into()
        )
    );
    let mut acme = labelled.to_vec();
    acme.extend_from_slice(&["--tenant", "acme"]);
    assert_eq!(
        decide(&acme),
        ("carrier-x-failover".into(), "retry_later".into())
    );
    assert_eq!(
        decide(&["--sip-code", "486"]),
        ("any".into(), "stop".into())
    );
}

/// #18 item 4: SIGHUP reloads the policy file. A valid change is live for the next
/// report without a restart; an invalid file keeps the live policy (logged with its
/// line); every decision names the version that made it; a duplicate keeps its first.
#[tokio::test]
async fn sighup_reloads_the_policy_and_an_invalid_file_keeps_the_live_one() {
    use call_outcome::proto::call_outcome_service_client::CallOutcomeServiceClient;
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("dir");
    let policy = dir.path().join("policy.toml");
    let write = |name: &str| {
        std::fs::write(
            &policy,
            format!("[[rules]]\nname = \"{name}\"\naction = \"stop\"\nexplanation = \"x\"\n"),
        )
        .expect("policy");
    };
    write("first");
    let mut child = bin()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "",
            "--policy",
        ])
        .arg(&policy)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("serve starts");
    // Read the log on threads, line by line, to find the address and then the reload
    // messages.
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().expect("stdout"));
    let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().expect("stderr"));
    for pipe in [out, err] {
        let lines_tx = lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let wait_for = |needle: &str| loop {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no log line with {needle}"));
        if line.contains(needle) {
            return line;
        }
    };
    let serving = wait_for("serving calloutcome");
    let addr = serving
        .split("listen=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("listen address")
        .to_owned();
    let mut client = CallOutcomeServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let decide = |call: &'static str| common::report(common::outcome(call, 1, "+15550100123", 486));
    let first = client
        .report_outcome(decide("hup-1"))
        .await
        .expect("report")
        .into_inner();
    let first = first.decision.expect("decision");
    assert_eq!(first.rule, "first");

    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    let hup = || rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP");
    write("second");
    hup();
    wait_for("policy reloaded");
    let second = client
        .report_outcome(decide("hup-2"))
        .await
        .expect("report")
        .into_inner();
    let second = second.decision.expect("decision");
    assert_eq!(second.rule, "second");
    assert_ne!(second.policy_version, first.policy_version);
    // A duplicate of the first report keeps its first decision and version.
    let again = client
        .report_outcome(decide("hup-1"))
        .await
        .expect("report")
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(
        again.decision.expect("decision").policy_version,
        first.policy_version
    );

    std::fs::write(
        &policy,
        "[[rules]]\nname = \"broken\"\naction = \"teleport\"\nexplanation = \"x\"\n",
    )
    .expect("write");
    hup();
    let rejected = wait_for("policy not reloaded");
    assert!(rejected.contains("policy.toml:3:"), "{rejected}");
    let third = client
        .report_outcome(decide("hup-3"))
        .await
        .expect("report")
        .into_inner();
    assert_eq!(third.decision.expect("decision").rule, "second");

    drop(client);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    // Waited for off the runtime, so that the client's connection task can answer the
    // server's GOAWAY (else the drain waits out its grace).
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("exit");
    assert!(status.success());
}

/// #18 item 5: `policy diff` on the worked example (examples/policy-diff): a carrier
/// override turns three declines into no-answers; the third decline within 24 h was a
/// suppression under the old policy, which only a replay in time order finds (the file
/// lists it before the second).
#[test]
fn policy_diff_replays_events_in_time_order_through_both_policies() {
    let args = [
        "policy",
        "diff",
        "--from",
        "examples/policy-diff/old.toml",
        "--to",
        "examples/policy-diff/new.toml",
        "--json",
        "examples/policy-diff/events.jsonl",
    ];
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(report["lines"], 5);
    assert_eq!(report["replayed"], 5);
    assert_eq!(report["changed"], 3);
    assert_eq!(report["skipped"], 0);
    let cells = |table: &str| -> Vec<(String, String, u64)> {
        report[table]
            .as_array()
            .expect("cells")
            .iter()
            .map(|c| {
                (
                    c["old"].as_str().expect("old").to_owned(),
                    c["new"].as_str().expect("new").to_owned(),
                    c["count"].as_u64().expect("count"),
                )
            })
            .collect()
    };
    assert_eq!(
        cells("rules"),
        [
            ("declined".into(), "no-answer".into(), 2),
            ("declined-suppression".into(), "no-answer".into(), 1)
        ]
    );
    assert_eq!(cells("actions"), [("stop".into(), "retry_later".into(), 3)]);
    assert_eq!(
        cells("categories"),
        [("declined".into(), "no_answer".into(), 3)]
    );
    let suppressed = &report["rules"][1]["examples"][0];
    assert_eq!(suppressed["call_id"], "c-3");
    assert_eq!(suppressed["old"]["suppressed"], true);
    assert_eq!(suppressed["new"]["override"], "carrier-x-603-no-answer");

    // The same outcomes as plain lines, on standard input; bad lines are skipped and
    // named; --exit-code says the decisions changed.
    let plain = [
        r#"{"tenant": "acme", "call_id": "c-1", "to": "+15550100123", "sip_code": 603, "labels": {"carrier": "x"}, "at": "2026-12-01T09:00:00Z"}"#,
        r#"{"tenant": "acme", "call_id": "c-3", "to": "+15550100123", "sip_code": 603, "labels": {"carrier": "x"}, "at": "2026-12-01T11:00:00Z"}"#,
        "not json",
        r#"{"tenant": "acme", "call_id": "c-2", "to": "+15550100123", "sip_code": 603, "labels": {"carrier": "x"}, "at": 1796119200}"#,
        r#"{"to": "+15550100999", "sip_code": 183, "at": "2026-12-01T12:00:00Z"}"#,
    ]
    .join("\n");
    let mut child = bin()
        .args([
            "policy",
            "diff",
            "--from",
            "examples/policy-diff/old.toml",
            "--to",
            "examples/policy-diff/new.toml",
            "--exit-code",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(plain.as_bytes()).expect("write");
    }
    let o = child.wait_with_output().expect("waits");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("Decisions changed: 3 of 3 (100.0 %)."),
        "{text}"
    );
    assert!(text.contains("line 3: not JSON"), "{text}");
    assert!(
        text.contains("line 5: SIP code 183 is provisional"),
        "{text}"
    );
    assert!(
        text.contains("declined stop suppressed → no_answer retry_later"),
        "{text}"
    );
    // The same policy on both sides changes nothing, and says so with exit 0.
    let o = run(&[
        "policy",
        "diff",
        "--from",
        "examples/policy-diff/new.toml",
        "--to",
        "examples/policy-diff/new.toml",
        "--exit-code",
        "examples/policy-diff/events.jsonl",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Decisions changed: 0 of 5 (0.0 %)."));
    // A bad policy is a config error (exit 78) with its location.
    let o = run(&[
        "policy",
        "diff",
        "--from",
        "examples/policy-diff/old.toml",
        "--to",
        "examples/config.toml",
        "examples/policy-diff/events.jsonl",
    ]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("examples/config.toml:"),
        "{}",
        stderr(&o)
    );
}
