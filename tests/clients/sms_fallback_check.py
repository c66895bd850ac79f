"""examples/sms-fallback against the real binary, through restarts of both sides.

Usage: sms_fallback_check.py CALL_OUTCOME_BIN SMS_FALLBACK_SCRIPT
Run with the Python that has the generated client installed (.tools/bin/client-python).

Reports declines and other outcomes; restarts the subscriber (SIGTERM, then again from
its token file) and the server (a new, empty log: the subscriber's token is from another
incarnation, so it must be told of the gap and go on). Checks that every decline whose
decision suggests SMS produced exactly one message, and nothing else did: not the busy
line, not the 608 network block (no SMS suggested), not the third decline of a number
(suppressed by the policy). Waits on the subscriber's output with a deadline, never a
fixed sleep. Exits 1 on the first broken expectation.
"""
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN, SCRIPT = sys.argv[1], sys.argv[2]
DEADLINE_S = 60
work = tempfile.mkdtemp(prefix="sms-fallback-")
state = os.path.join(work, "token")
out_path = os.path.join(work, "messages.jsonl")
err_path = os.path.join(work, "subscriber.log")


def fail(message):
    for path in (err_path, os.path.join(work, "server.log")):
        if os.path.exists(path):
            print(f"--- {path}\n{open(path).read()}", file=sys.stderr)
    sys.exit(f"sms-fallback: {message}")


with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
address = f"127.0.0.1:{port}"


def start_server():
    server = subprocess.Popen([BIN, "serve", "--listen", address, "--admin-listen", ""],
                              stdout=open(os.path.join(work, "server.log"), "a"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.05)
    fail("the server did not start")


def stop(process, what):
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        fail(f"{what} did not stop on SIGTERM")
    if code != 0:
        fail(f"{what} exited {code} on SIGTERM")


def start_subscriber(*extra):
    return subprocess.Popen([sys.executable, SCRIPT, "--server", address, "--state", state, *extra],
                            stdout=open(out_path, "a"), stderr=open(err_path, "a"))


def report(call_id, to, code):
    r = subprocess.run([BIN, "report", "--server", f"http://{address}", "--call-id", call_id,
                        "--attempt", "1", "--to", to, "--sip-code", str(code)], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"report {call_id}: {r.stderr}")


def messages():
    with open(out_path) as f:
        return [json.loads(line) for line in f if line.strip()]


def wait_for_messages(call_ids):
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        sent = {m["call_id"] for m in messages()}
        if set(call_ids) <= sent:
            return
        time.sleep(0.05)
    fail(f"no message for {sorted(set(call_ids) - {m['call_id'] for m in messages()})}")


open(out_path, "w").close()
server = start_server()
subscriber = start_subscriber("--from-oldest")
report("d1", "+15550100001", 603)    # declined: SMS
report("b1", "+15550100002", 486)    # busy: not a decline event
report("u1", "+15550100003", 607)    # unwanted (607): SMS or email suggested
report("n1", "+15550100007", 608)    # blocked by network analytics: no SMS suggested
for n in (1, 2, 3):                  # the third decline within 24 h is suppressed
    report(f"s{n}", "+15550100004", 603)
wait_for_messages(["d1", "u1", "s1", "s2"])

# The subscriber restarts: it resumes from its token file, repeating nothing.
stop(subscriber, "the subscriber")
subscriber = start_subscriber()
report("d2", "+15550100005", 603)
wait_for_messages(["d2"])

# The server restarts (a new, empty log): the subscriber reconnects, is told of the gap.
stop(server, "the server")
server = start_server()
report("d3", "+15550100006", 603)
wait_for_messages(["d3"])
stop(subscriber, "the subscriber")
stop(server, "the server")

sent = [m["call_id"] for m in messages()]
if sorted(sent) != sorted(["d1", "u1", "s1", "s2", "d2", "d3"]):
    fail(f"expected one message per SMS-worthy decline, got {sent}")
if any(m["text"] == "" or not m["to"].startswith("+1555") for m in messages()):
    fail(f"malformed messages: {messages()}")
log = open(err_path).read()
if "GAP:" not in log or "EPOCH_CHANGED" not in log:
    fail("the server's restart was not reported as a gap")
if "reconnecting" not in log:
    fail("the subscriber did not reconnect after the server's restart")

# The HTTP sender: a JSON POST per message, the event id as Idempotency-Key.
received = []


class SmsApi(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        received.append((self.path, self.headers.get("Idempotency-Key"), self.headers.get("Authorization"), body))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args):
        pass


api = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SmsApi)
threading.Thread(target=api.serve_forever, daemon=True).start()
os.remove(state)
server = start_server()
report("h1", "+15550100008", 603)
subscriber = start_subscriber("--from-oldest", "--sender", "http", "--from", "+15550100000",
                              "--http-url", f"http://127.0.0.1:{api.server_address[1]}/v1/messages",
                              "--http-header", "Authorization: Bearer sms-api-key")
deadline = time.monotonic() + DEADLINE_S
while not received and time.monotonic() < deadline:
    time.sleep(0.05)
stop(subscriber, "the HTTP subscriber")
stop(server, "the server")
api.shutdown()
if len(received) != 1:
    fail(f"the SMS API got {len(received)} requests")
path, key, auth, body = received[0]
if path != "/v1/messages" or auth != "Bearer sms-api-key" or not key \
        or body.get("to") != "+15550100008" or body.get("from") != "+15550100000" or not body.get("text"):
    fail(f"unexpected SMS API request: {received[0]}")
shutil.rmtree(work, ignore_errors=True)
print(json.dumps({"messages": sent, "gap_logged": True, "http_sender": body["to"]}))
