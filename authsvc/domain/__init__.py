"""The rules of sessions and tokens; no gRPC, no SQL, no environment."""
