"""The gRPC edge: protobuf in and out, errors to statuses; no rules of its own."""
