import type { Client } from "@connectrpc/connect";
import { CallOutcomeService } from "./gen/calloutcome/v1/call_outcome_pb.js";

export * from "./gen/calloutcome/v1/call_outcome_pb.js";
export { BadRequestSchema } from "./gen/google/rpc/error_details_pb.js";
export type { BadRequest, BadRequest_FieldViolation } from "./gen/google/rpc/error_details_pb.js";

/**
 * A CallOutcomeService client speaking gRPC (HTTP/2) to `baseUrl`
 * ("http://127.0.0.1:50051", or https:// for TLS). `token` is sent as
 * `authorization: Bearer <token>` when given.
 */
export declare function createCallOutcomeClient(
  baseUrl: string,
  options?: { token?: string },
): Client<typeof CallOutcomeService>;
