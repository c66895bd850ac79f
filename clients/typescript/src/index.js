// call-outcome's TypeScript client: the generated Protobuf-ES types and service, and a
// Connect client over HTTP/2 gRPC. Everything under ./gen is generated (clients/generate.sh).
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CallOutcomeService } from "./gen/calloutcome/v1/call_outcome_pb.js";

export * from "./gen/calloutcome/v1/call_outcome_pb.js";
export { BadRequestSchema } from "./gen/google/rpc/error_details_pb.js";

/**
 * A CallOutcomeService client speaking gRPC (HTTP/2) to `baseUrl`
 * ("http://127.0.0.1:50051", or https:// for TLS). `token` is sent as
 * `authorization: Bearer <token>` when given.
 */
export function createCallOutcomeClient(baseUrl, { token } = {}) {
  const interceptors = token
    ? [(next) => (req) => {
        req.header.set("authorization", `Bearer ${token}`);
        return next(req);
      }]
    : [];
  return createClient(CallOutcomeService, createGrpcTransport({ baseUrl, interceptors }));
}
