"""The Python client as its users install it (`pip install ./clients/python`) against a
running call-outcome.

Usage: python_client_check.py HOST:PORT
  * Classify a 603: a decline with a decision;
  * ReportOutcome, then the same report again: the duplicate returns the first response;
  * an invalid report: INVALID_ARGUMENT whose google.rpc.BadRequest grpcio's rich-error
    support (grpc_status) decodes, naming the fields at fault;
  * a subscription resumed from a token: the next event after it, not the ones before.
Prints what it saw as JSON; exits 1 on the first broken expectation.
"""
import json
import sys

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from calloutcome.v1 import call_outcome_pb2 as pb
from calloutcome.v1 import call_outcome_pb2_grpc as rpc

address = sys.argv[1]
seen = {}


def expect(condition, what):
    if not condition:
        print(json.dumps(seen, indent=1), file=sys.stderr)
        sys.exit(f"python client: {what}")


def decline(call_id, to="+15550104477"):
    return pb.CallOutcome(call_id=call_id, attempt=1, to=to, sip=pb.SipResponse(code=603))


with grpc.insecure_channel(address) as channel:
    client = rpc.CallOutcomeServiceStub(channel)

    c = client.Classify(pb.ClassifyRequest(outcome=pb.CallOutcome(sip=pb.SipResponse(code=603))))
    seen["classify"] = [pb.Category.Name(c.classification.category), c.decision.rule]
    expect(c.classification.category == pb.CATEGORY_DECLINED, "Classify 603 is not DECLINED")
    expect(c.decision.action != pb.ACTION_UNSPECIFIED and c.decision.policy_version, "no decision")

    first = client.ReportOutcome(pb.ReportOutcomeRequest(outcome=decline("py-1")))
    again = client.ReportOutcome(pb.ReportOutcomeRequest(outcome=decline("py-1")))
    seen["report"] = [first.event_id, first.duplicate, again.duplicate]
    expect(not first.duplicate and again.duplicate, "the repeated report is not a duplicate")
    again.duplicate = False
    expect(again == first, "the duplicate differs from the first response")

    try:
        client.ReportOutcome(pb.ReportOutcomeRequest(outcome=pb.CallOutcome(sip=pb.SipResponse(code=180))))
        expect(False, "an invalid report was accepted")
    except grpc.RpcError as error:
        expect(error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{error.code()}")
        status = rpc_status.from_call(error)
        expect(status is not None, "no google.rpc.Status in the trailers")
        fields = []
        for detail in status.details:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                fields += [v.field for v in bad.field_violations]
        seen["bad_request"] = fields
        expect({"outcome.call_id", "outcome.sip.code"} <= set(fields), f"violations {fields}")

    # Resume: the token of py-2's event, then py-3 is the next event delivered.
    client.ReportOutcome(pb.ReportOutcomeRequest(outcome=decline("py-2", "+15550104478")))
    stream = client.SubscribeOutcomes(pb.SubscribeOutcomesRequest(start=pb.START_POSITION_OLDEST), timeout=30)
    token = None
    for message in stream:
        if message.WhichOneof("kind") == "event" and message.event.outcome.call_id == "py-2":
            token = message.event.resume_token
            break
    stream.cancel()
    expect(token, "py-2's event never came")
    client.ReportOutcome(pb.ReportOutcomeRequest(outcome=decline("py-3", "+15550104479")))
    resumed = client.SubscribeOutcomes(pb.SubscribeOutcomesRequest(resume_token=token), timeout=30)
    for message in resumed:
        if message.WhichOneof("kind") == "event":
            seen["resumed"] = message.event.outcome.call_id
            break
    resumed.cancel()
    expect(seen.get("resumed") == "py-3", "the resumed subscription did not start after the token")

print(json.dumps(seen))
