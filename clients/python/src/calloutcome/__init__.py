"""call-outcome's gRPC client: `calloutcome.v1` holds the code generated from its proto."""
