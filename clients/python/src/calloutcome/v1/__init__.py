"""calloutcome.v1, generated from proto/calloutcome/v1/call_outcome.proto by buf generate (clients/generate.sh)."""
