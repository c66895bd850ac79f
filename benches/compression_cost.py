"""Server CPU per ReportOutcome for a stock grpcio client (which offers gzip), with
`server.compression` off and on: the cost that made compression a setting (#16).

Usage: benches/compression_cost.py BINARY [N]   (grpcio: .ci/tools.sh grpcio; run with
.tools/bin/grpc-python). Starts BINARY twice on a free port, sends N reports one by one,
and prints the server's CPU time per report read from /proc/<pid>/stat.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time

import grpc
import grpc_tools
from grpc_tools import protoc

binary = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = tempfile.mkdtemp()
protoc.main(["protoc", f"-I{root}/proto",
             f"-I{os.path.join(os.path.dirname(grpc_tools.__file__), '_proto')}",
             f"--python_out={out}", f"--grpc_python_out={out}",
             "calloutcome/v1/call_outcome.proto"])
sys.path.insert(0, out)
from calloutcome.v1 import call_outcome_pb2 as pb  # noqa: E402
from calloutcome.v1 import call_outcome_pb2_grpc as rpc  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


for compression in ("off", "gzip"):
    port = free_port()
    env = dict(os.environ, CALL_OUTCOME_SERVER__COMPRESSION=compression)
    server = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}",
                               "--admin-listen", ""], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = rpc.CallOutcomeServiceStub(channel)
        def report(i):
            return stub.ReportOutcome(pb.ReportOutcomeRequest(outcome=pb.CallOutcome(
                call_id=f"{compression}-{i}", attempt=1, to="+15550100940",
                sip=pb.SipResponse(code=603))), timeout=10)
        for i in range(200):
            report(-i - 1)
        before, started = cpu_seconds(server.pid), time.monotonic()
        for i in range(n):
            report(i)
        spent = cpu_seconds(server.pid) - before
        wall = time.monotonic() - started
        print(f"compression={compression}: {spent / n * 1e6:.0f} µs of server CPU per "
              f"report ({n} reports, {n / wall:.0f}/s one at a time)")
    finally:
        server.terminate()
        server.wait()
