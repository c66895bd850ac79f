#!/usr/bin/env python3
"""SMS fallback: text "sorry we missed you" to callees who declined, as call-outcome decides.

A worked subscriber on the generated Python client (`pip install ./clients/python`). It
subscribes to decline events and, for each one whose decision suggests SMS and whose
destination is not suppressed, sends one message through a pluggable sender:

    python3 sms_fallback.py --server 127.0.0.1:50051 --state /var/lib/sms-fallback/token
    python3 sms_fallback.py --sender http --http-url https://sms.example/v1/messages \\
        --http-header "Authorization: Bearer $SMS_API_KEY" --from +15550100000 ...

Delivery: the resume token is written (atomically) after every handled event, heartbeat
and gap, so a restart resumes right after the last event handled: it neither repeats nor
skips one. A crash between sending and writing the token can repeat that one message; the
HTTP sender therefore sends the event id as `Idempotency-Key`, which SMS APIs use to drop
the repeat. A `Gap` (events the service no longer had) is logged with what was lost. On
UNAVAILABLE (a restart, a drain, a lost connection) it reconnects with exponential backoff
and jitter, with the last token; a refusal (bad token, no permission) ends it with status 2.
"""
import argparse
import json
import logging
import os
import random
import signal
import sys
import tempfile
import time
import urllib.request

import grpc

from calloutcome.v1 import call_outcome_pb2 as pb
from calloutcome.v1 import call_outcome_pb2_grpc as rpc

log = logging.getLogger("sms-fallback")

# Statuses worth reconnecting for; anything else is a configuration problem.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}
RESUME_TOKEN_METADATA = "x-resume-token"


class ConsoleSender:
    """Prints each message as a JSON line on standard output (the default; for trying it)."""

    def send(self, to, text, event):
        print(json.dumps({"to": to, "text": text, "event_id": event.event_id,
                          "call_id": event.outcome.call_id}), flush=True)


class HttpSender:
    """POSTs {"to", "from", "text"} as JSON to an SMS API, with the event id as
    Idempotency-Key so that a repeat after a crash is dropped by the API."""

    def __init__(self, url, sender_number, headers, timeout=10.0):
        self.url, self.sender_number, self.headers, self.timeout = url, sender_number, headers, timeout

    def send(self, to, text, event):
        body = json.dumps({"to": to, "from": self.sender_number, "text": text}).encode()
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Idempotency-Key": event.event_id, **self.headers})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            if response.status >= 300:
                raise RuntimeError(f"SMS API answered {response.status}")


class TokenFile:
    """The resume token, replaced atomically (write, fsync, rename) so a crash leaves
    either the old token or the new one, never half of one."""

    def __init__(self, path):
        self.path = path

    def load(self):
        try:
            with open(self.path) as f:
                return f.read().strip()
        except FileNotFoundError:
            return ""

    def save(self, token):
        folder = os.path.dirname(os.path.abspath(self.path))
        with tempfile.NamedTemporaryFile("w", dir=folder, delete=False) as f:
            f.write(token)
            f.flush()
            os.fsync(f.fileno())
        os.replace(f.name, self.path)


def wants_sms(event):
    """The service's decision, honoured: SMS suggested, destination not suppressed."""
    decision = event.decision
    return pb.ALTERNATIVE_SMS in decision.alternatives and not decision.suppressed


def run(args, sender, tokens, stopping):
    token = tokens.load()
    backoff = 0.2
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    while not stopping["now"]:
        request = pb.SubscribeOutcomesRequest(
            tenant=args.tenant,
            categories=[pb.CATEGORY_DECLINED, pb.CATEGORY_REJECTED_UNWANTED],
            start=pb.START_POSITION_OLDEST if args.from_oldest else pb.START_POSITION_NEW,
            resume_token=token,
        )
        channel = grpc.insecure_channel(args.server)
        stream = rpc.CallOutcomeServiceStub(channel).SubscribeOutcomes(request, metadata=metadata)
        stopping["stream"] = stream
        try:
            for message in stream:
                backoff = 0.2
                kind = message.WhichOneof("kind")
                if kind == "event":
                    event = message.event
                    if wants_sms(event):
                        sender.send(event.outcome.to, args.text, event)
                        log.info("texted %s after %s (event %s)", event.outcome.to,
                                 pb.Category.Name(event.classification.category), event.event_id)
                    else:
                        log.info("no SMS for event %s (%s)", event.event_id,
                                 "suppressed" if event.decision.suppressed else "not suggested")
                    token = event.resume_token
                elif kind == "heartbeat":
                    token = message.heartbeat.resume_token
                elif kind == "gap":
                    gap = message.gap
                    if gap.first_sequence <= gap.last_sequence:
                        lost = f"events {gap.first_sequence}..={gap.last_sequence}"
                    else:
                        lost = f"the events after sequence {gap.first_sequence - 1} (the log was recreated)"
                    log.warning("GAP: %s were lost (%s); their callees get no SMS",
                                lost, pb.GapReason.Name(gap.reason_code))
                    token = gap.resume_token
                tokens.save(token)
                if stopping["now"]:
                    break
        except grpc.RpcError as error:
            if stopping["now"]:
                break
            for key, value in error.trailing_metadata() or ():
                if key == RESUME_TOKEN_METADATA and value:
                    token = value
                    tokens.save(token)
            if error.code() not in RETRYABLE:
                log.error("the service refused the subscription: %s: %s", error.code(), error.details())
                return 2
            delay = backoff * (1 + random.random() / 2)
            log.warning("%s: %s; reconnecting in %.1f s", error.code().name, error.details(), delay)
            time.sleep(delay)
            backoff = min(backoff * 2, 10.0)
        finally:
            channel.close()
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default="127.0.0.1:50051", help="call-outcome's gRPC address")
    parser.add_argument("--state", required=True, help="file that keeps the resume token")
    parser.add_argument("--tenant", default="", help="tenant (default: the caller's)")
    parser.add_argument("--token", default=os.environ.get("CALL_OUTCOME_TOKEN", ""), help="API key or JWT")
    parser.add_argument("--from-oldest", action="store_true", help="first run: start from the oldest kept event")
    parser.add_argument("--text", default="Sorry we missed you! We tried to call you just now; reply or call us back any time.")
    parser.add_argument("--sender", choices=["console", "http"], default="console")
    parser.add_argument("--http-url", help="SMS API endpoint (--sender http)")
    parser.add_argument("--http-header", action="append", default=[], help="'Name: value' (repeatable)")
    parser.add_argument("--from", dest="sender_number", default="", help="number the SMS comes from")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    if args.sender == "http":
        if not args.http_url:
            parser.error("--sender http needs --http-url")
        headers = dict(h.split(":", 1) for h in args.http_header)
        sender = HttpSender(args.http_url, args.sender_number, {k.strip(): v.strip() for k, v in headers.items()})
    else:
        sender = ConsoleSender()
    stopping = {"now": False, "stream": None}

    def stop(*_):
        # Finish the event in hand (its token is saved), then leave.
        stopping["now"] = True
        if stopping["stream"] is not None:
            stopping["stream"].cancel()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.exit(run(args, sender, TokenFile(args.state), stopping))


if __name__ == "__main__":
    main()
