#!/usr/bin/env python3
"""The chart's alerts and dashboard on a real Prometheus scraping the real binary.

    live_check.py CALL_OUTCOME PROMETHEUS RULES.yml DASHBOARD.json LOADGEN...

RULES.yml is the chart's PrometheusRule rendered with thresholds low enough that every
alert can fire under this short load (backend errors, which the embedded backend never
makes, with a negative one: the expression must still return its zero series).
Starts `call-outcome serve` (webhooks on, [metrics] carrier label, a per-connection
in-flight limit, a small event log, a watched policy file) and Prometheus (1 s scrapes
and rule evaluation), drives a bounded load that produces every alerting condition
(declines per carrier, route and callee Retry-After, load shedding with LOADGEN, a
forged webhook, a subscriber gap, a refused policy reload), then checks, waiting on
Prometheus' answers with a deadline, never a fixed sleep:
  * every rule loaded with health ok;
  * every alert expression and every dashboard query returns data;
  * every calloutcome_* metric they name is in the binary's /metrics.
Loopback only, free ports; exits 1 on the first failure.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

BIN, PROMETHEUS, RULES, DASHBOARD = sys.argv[1:5]
LOADGEN = sys.argv[5:]
DEADLINE_S = 90


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def ok(message):
    print(f"ok - {message}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, data=None, headers=None):
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(what, check, explain=lambda: ""):
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        time.sleep(0.2)
    fail(f"{what}: not within {DEADLINE_S} s{explain()}")


work = tempfile.mkdtemp(prefix="prom-live-")
grpc, admin, hooks, prom = free_port(), free_port(), free_port(), free_port()
policy = os.path.join(work, "policy.toml")
shutil.copy(os.path.join(os.path.dirname(__file__), "..", "..", "src/policy/default.toml"), policy)
config = os.path.join(work, "config.toml")
with open(config, "w") as f:
    f.write(f"""listen = "127.0.0.1:{grpc}"
admin_listen = "127.0.0.1:{admin}"
default_tenant = "demo"
policy_file = "policy.toml"

[server]
max_in_flight_per_connection = 1

[events]
max_events = 16

[metrics]
carrier_label = "carrier"
carrier_values = ["x", "y"]

[webhooks]
listen = "127.0.0.1:{hooks}"
public_base_url = "http://127.0.0.1:{hooks}"

[webhooks.tenants.demo.twilio]
auth_tokens = ["demo-twilio-auth-token"]
""")
with open(os.path.join(work, "prometheus.yml"), "w") as f:
    f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["{os.path.abspath(RULES)}"]
scrape_configs:
  - job_name: call-outcome
    static_configs:
      - targets: ["127.0.0.1:{admin}"]
""")

procs = []


def start(args, log):
    p = subprocess.Popen(args, stdout=open(os.path.join(work, log), "w"), stderr=subprocess.STDOUT)
    procs.append(p)
    return p


def stop_all():
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


try:
    start([BIN, "serve", "--config", config], "serve.log")
    wait_for("call-outcome admin", lambda: get(f"http://127.0.0.1:{admin}/healthz")[0] == 200)
    start([PROMETHEUS, f"--config.file={work}/prometheus.yml", f"--storage.tsdb.path={work}/tsdb",
           f"--web.listen-address=127.0.0.1:{prom}"], "prometheus.log")
    wait_for("prometheus ready", lambda: get(f"http://127.0.0.1:{prom}/-/ready")[0] == 200)

    server = ["--server", f"http://127.0.0.1:{grpc}"]

    def query(expr):
        status, body = get(f"http://127.0.0.1:{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        answer = json.loads(body)
        if answer.get("status") != "success":
            fail(f"query error for {expr!r}: {body}")
        return answer["data"]["result"]

    # Counters must move between scrapes for a rate to show: load only once scraped.
    wait_for("Prometheus' first scrape of the service", lambda: query('up{job="call-outcome"} == 1'))

    def report(call, code, *extra):
        r = subprocess.run([BIN, "report", *server, "--call-id", call, "--attempt", "1",
                            "--to", f"+1555010{abs(hash(call)) % 10000:04d}", "--sip-code", str(code), *extra],
                           capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"report {call}: {r.stderr}")

    def forged_webhook():
        status, body = get(f"http://127.0.0.1:{hooks}/v1/webhooks/twilio/demo",
                           data=b"CallSid=CAx&CallStatus=busy&SequenceNumber=1",
                           headers={"Content-Type": "application/x-www-form-urlencoded",
                                    "X-Twilio-Signature": "Zm9yZ2VkIHNpZ25hdHVyZQ=="})
        if status != 401:
            fail(f"a forged Twilio callback answered {status}: {body}")

    def shed_so_far():
        m = re.findall(r'^calloutcome_shed_requests_total\{[^}]*\} (\d+)', get(f"http://127.0.0.1:{admin}/metrics")[1], re.M)
        return sum(int(v) for v in m)

    def overload():
        # 64 requests in flight on one connection against a limit of 1: sheds as soon as
        # two land in handlers at once (two runtime threads); repeated until one has.
        before = shed_so_far()
        for _ in range(10):
            load = subprocess.run([*LOADGEN, "unary", "--target", f"127.0.0.1:{grpc}", "--duration", "1",
                                   "--warmup", "0", "--rounds", "1", "--no-pin", "--rpcs", "classify"],
                                  capture_output=True, text=True, timeout=120)
            if load.returncode != 0:
                fail(f"loadgen: {load.stdout}{load.stderr}")
            if shed_so_far() > before:
                return
        fail("64 requests in flight on one connection were never shed by a limit of 1")

    # An early event's token, to come back with once the 16-event log has moved on.
    report("first", 486, "--label", "carrier=y")
    r = subprocess.run([BIN, "subscribe", *server, "--all-categories", "--from-oldest", "--max-events", "1", "--json"],
                       capture_output=True, text=True, timeout=30)
    token = json.loads(r.stdout.splitlines()[0])["resume_token"]

    # Two rounds: a counter's series appears with its first increment, and a rate needs
    # it to move between two scrapes, so the second round starts once the first is in.
    for round in (1, 2):
        for i in range(6 * round):
            report(f"d{round}-{i}", 603, "--label", "carrier=x")
        for i in range(3 * round):
            report(f"a{round}-{i}", 200, "--label", "carrier=y")
        for i in range(2 * round):
            report(f"r{round}-{i}", 503, "--retry-after", "120", "--label", "carrier=y")
            report(f"c{round}-{i}", 486, "--retry-after", "60", "--label", "carrier=y")
        forged_webhook()
        overload()
        if round == 1:
            for expr in ('calloutcome_outcomes_total{carrier="x"}',
                         'calloutcome_webhooks_total{result="bad_signature"}',
                         'calloutcome_shed_requests_total'):
                wait_for(f"Prometheus scraping {expr}", lambda: query(expr))
    ok("reports: declines on carrier x, answers on y, route and callee Retry-After")
    ok("forged webhooks were refused (401)")
    ok(f"requests over the per-connection in-flight limit were shed ({shed_so_far()})")
    r = subprocess.run([BIN, "subscribe", *server, "--from-token", token, "--all-categories", "--max-events", "1"],
                       capture_output=True, text=True, timeout=30)
    if "gap:" not in r.stderr:
        fail(f"no gap for a token 16+ events old: {r.stderr}")
    ok("a subscriber resumed behind the log's retention and was told of the gap")
    with open(policy, "a") as f:
        f.write('\n[[rules]]\nname = "broken"\naction = "teleport"\nexplanation = "x"\n')
    wait_for("the watcher refusing the broken policy",
             lambda: re.search(r'^calloutcome_policy_reloads_total\{[^}]*result="rejected"[^}]*\} [1-9]',
                               get(f"http://127.0.0.1:{admin}/metrics")[1], re.M))
    ok("a broken policy file was refused by the watcher")
    exposed = get(f"http://127.0.0.1:{admin}/metrics")[1]

    def targets():
        return "\nPrometheus' targets: " + get(f"http://127.0.0.1:{prom}/api/v1/targets")[1][:2000]

    rules = wait_for("rules loaded", lambda: [r for g in json.loads(get(f"http://127.0.0.1:{prom}/api/v1/rules")[1])["data"]["groups"] for r in g["rules"]])
    bad = [r["name"] for r in rules if r.get("health") != "ok" and r.get("health") != "unknown"]
    if bad:
        fail(f"rules unhealthy: {bad}")
    alerts = [(r["name"], r["query"]) for r in rules if r["type"] == "alerting"]
    if len(alerts) != 7:
        fail(f"expected the chart's 7 alerts, Prometheus loaded {[a for a, _ in alerts]}")
    for name, expr in alerts:
        wait_for(f"alert {name} returning data ({expr})", lambda: query(expr), targets)
        ok(f"alert {name}: its expression returns data on the live metrics")
    dashboard = json.load(open(DASHBOARD))
    targets = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    for title, expr in targets:
        live = expr.replace("$job", ".+").replace("$__rate_interval", "1m")
        wait_for(f"dashboard panel {title!r} returning data ({live})", lambda: query(live), targets)
    ok(f"every dashboard query returns data ({len(targets)} queries in {len(dashboard['panels'])} panels)")
    names = set()
    for expr in [e for _, e in alerts] + [e for _, e in targets]:
        names.update(re.findall(r"\b(calloutcome_[a-z_]+)", expr))
    missing = []
    for name in sorted(names):
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name.endswith(("_bucket", "_sum", "_count")) and "duration" in name else name
        family = family.removesuffix("_total")
        if not re.search(rf"^# TYPE {re.escape(family)}(_total)? ", exposed, re.M):
            missing.append(name)
    if missing:
        fail(f"queries name metrics /metrics does not expose: {missing}")
    ok(f"every metric the alerts and the dashboard name is exposed ({len(names)} names)")
finally:
    stop_all()
    if os.environ.get("KEEP_PROM_LIVE") is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work}")
