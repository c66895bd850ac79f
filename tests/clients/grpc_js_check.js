// Stock @grpc/grpc-js (default options) against a running call-outcome.
// Usage: node grpc_js_check.js HOST:PORT PROTO_DIR
// A request with 3,000 bad labels is answered INVALID_ARGUMENT within its 10 s deadline,
// with small trailers (before #15, 672 KB of trailers made grpc-js hang to its deadline).
'use strict';
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const [address, protoDir] = process.argv.slice(2);
const definition = loader.loadSync('calloutcome/v1/call_outcome.proto', {
  includeDirs: [protoDir],
  keepCase: true,
  defaults: true,
});
const pkg = grpc.loadPackageDefinition(definition);
const client = new pkg.calloutcome.v1.CallOutcomeService(address, grpc.credentials.createInsecure());

const labels = {};
for (let i = 0; i < 3000; i++) labels[`bad\u0001${i}`] = 'v';
const started = Date.now();
client.ReportOutcome(
  { outcome: { call_id: 'js-labels', attempt: 1, to: '+15550100901', sip: { code: 603 }, labels } },
  { deadline: new Date(Date.now() + 10000) },
  (err) => {
    const elapsed = Date.now() - started;
    if (!err) {
      console.error('3000 bad labels were accepted');
      process.exit(1);
    }
    let trailerBytes = 0;
    for (const [k, vs] of Object.entries(err.metadata ? err.metadata.getMap() : {})) {
      trailerBytes += k.length + (Buffer.isBuffer(vs) ? vs.length : String(vs).length);
    }
    const summary = { code: grpc.status[err.code], elapsed_ms: elapsed, trailer_bytes: trailerBytes };
    console.log(JSON.stringify(summary));
    if (err.code !== grpc.status.INVALID_ARGUMENT || elapsed > 5000 || trailerBytes > 4096) {
      console.error(`unexpected: ${err.code} ${err.details}`);
      process.exit(1);
    }
    client.close();
  },
);
