"""Stock grpcio (default channel options) against a running call-outcome.

Usage: grpcio_check.py HOST:PORT PROTO_DIR
Checks, with the client users actually run:
  * a request with 33 and with 3,000 bad labels is INVALID_ARGUMENT, with field
    violations grpcio can read, and trailers well under grpc's 8 KB default
    (before #15 grpcio reported RESOURCE_EXHAUSTED for 33, and 3,000 made 672 KB);
  * short client deadlines end OK or DEADLINE_EXCEEDED, never the server's CANCELLED.
Prints a JSON summary; exits 1 on the first broken expectation.
"""

import json
import random
import sys
import tempfile

import grpc
from grpc_tools import protoc

address, proto_dir = sys.argv[1], sys.argv[2]
out = tempfile.mkdtemp()
import grpc_tools, os  # noqa: E401

well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
rc = protoc.main(
    [
        "protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "calloutcome/v1/call_outcome.proto",
    ]
)
if rc != 0:
    sys.exit(f"protoc failed: {rc}")
sys.path.insert(0, out)
from calloutcome.v1 import call_outcome_pb2 as pb  # noqa: E402
from calloutcome.v1 import call_outcome_pb2_grpc as rpc  # noqa: E402

channel = grpc.insecure_channel(address)
stub = rpc.CallOutcomeServiceStub(channel)
summary = {}


def fail(message):
    print(json.dumps(summary, indent=1))
    sys.exit(message)


def report(call_id, labels=None):
    return pb.ReportOutcomeRequest(
        outcome=pb.CallOutcome(
            call_id=call_id,
            attempt=1,
            to="+15550100900",
            sip=pb.SipResponse(code=603),
            labels=labels or {},
        )
    )


for n in (33, 3000):
    labels = {f"bad\x01{i}": "v" for i in range(n)}
    try:
        stub.ReportOutcome(report(f"labels-{n}", labels), timeout=10)
        fail(f"{n} bad labels were accepted")
    except grpc.RpcError as e:
        trailers = sum(len(k) + len(v) for k, v in e.trailing_metadata() or ())
        summary[f"labels_{n}"] = {"code": e.code().name, "trailer_bytes": trailers}
        if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
            fail(f"{n} bad labels: {e.code()} {e.details()}")
        if trailers > 4096:
            fail(f"{n} bad labels: {trailers} bytes of trailers")
        if "more violations" not in e.details():
            fail(f"{n} bad labels: the rest is not counted: {e.details()}")

codes = {}
rng = random.Random(15)
for i in range(300):
    timeout = rng.uniform(0.00005, 0.003)
    try:
        stub.ReportOutcome(report(f"deadline-{i}"), timeout=timeout)
        code = "OK"
    except grpc.RpcError as e:
        code = e.code().name
    codes[code] = codes.get(code, 0) + 1
summary["short_deadlines"] = codes
if set(codes) - {"OK", "DEADLINE_EXCEEDED"}:
    fail(f"short deadlines ended otherwise: {codes}")
print(json.dumps(summary))
