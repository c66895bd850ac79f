// The TypeScript client as its users install it (the npm package of clients/typescript)
// against a running call-outcome: node ts_client_check.mjs HOST:PORT. Run from a folder
// whose node_modules holds @call-outcome/client (.tools/ts-client).
//  * Classify a 603: a decline with a decision;
//  * ReportOutcome, then again: the duplicate returns the first response;
//  * an invalid report: INVALID_ARGUMENT whose google.rpc.BadRequest Connect's
//    ConnectError.findDetails decodes, naming the fields at fault;
//  * a subscription resumed from a token: the next event after it.
// Prints what it saw as JSON; exits 1 on the first broken expectation.
import { equals } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  Category,
  ReportOutcomeResponseSchema,
  StartPosition,
  createCallOutcomeClient,
} from "@call-outcome/client";

const client = createCallOutcomeClient(`http://${process.argv[2]}`);
const seen = {};
function expect(condition, what) {
  if (!condition) {
    console.error(JSON.stringify(seen, null, 1));
    console.error(`typescript client: ${what}`);
    process.exit(1);
  }
}
const decline = (callId, to = "+15550105577") => ({ callId, attempt: 1, to, sip: { code: 603 } });

const c = await client.classify({ outcome: { sip: { code: 603 } } });
seen.classify = [Category[c.classification.category], c.decision.rule];
expect(c.classification.category === Category.DECLINED, "Classify 603 is not DECLINED");
expect(c.decision.policyVersion !== "", "no decision");

const first = await client.reportOutcome({ outcome: decline("ts-1") });
const again = await client.reportOutcome({ outcome: decline("ts-1") });
seen.report = [first.eventId, first.duplicate, again.duplicate];
expect(!first.duplicate && again.duplicate, "the repeated report is not a duplicate");
again.duplicate = false;
expect(equals(ReportOutcomeResponseSchema, again, first), "the duplicate differs from the first response");

try {
  await client.reportOutcome({ outcome: { sip: { code: 180 } } });
  expect(false, "an invalid report was accepted");
} catch (e) {
  const error = ConnectError.from(e);
  expect(error.code === Code.InvalidArgument, `code ${Code[error.code]}`);
  const fields = error.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations.map((v) => v.field));
  seen.badRequest = fields;
  expect(fields.includes("outcome.call_id") && fields.includes("outcome.sip.code"), `violations ${fields}`);
}

await client.reportOutcome({ outcome: decline("ts-2", "+15550105578") });
let token = "";
{
  const abort = new AbortController();
  for await (const message of client.subscribeOutcomes({ start: StartPosition.OLDEST }, { signal: abort.signal, timeoutMs: 30000 })) {
    if (message.kind.case === "event" && message.kind.value.outcome.callId === "ts-2") {
      token = message.kind.value.resumeToken;
      abort.abort();
      break;
    }
  }
}
expect(token !== "", "ts-2's event never came");
await client.reportOutcome({ outcome: decline("ts-3", "+15550105579") });
{
  const abort = new AbortController();
  for await (const message of client.subscribeOutcomes({ resumeToken: token }, { signal: abort.signal, timeoutMs: 30000 })) {
    if (message.kind.case === "event") {
      seen.resumed = message.kind.value.outcome.callId;
      abort.abort();
      break;
    }
  }
}
expect(seen.resumed === "ts-3", "the resumed subscription did not start after the token");
console.log(JSON.stringify(seen));
