"""authsvc: a session and token service over gRPC, backed by PostgreSQL."""
