"""authsvc: a session and token service over gRPC, backed by PostgreSQL."""

import os

# gRPC's C core writes its own log lines to stderr (a TLS handshake a client botches, a
# GOAWAY), which any client can trigger and which break the JSON-lines log. Off unless
# the operator sets GRPC_VERBOSITY; set here, before anything imports grpc, because the
# core reads it once, at import.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

# The release version of the service, its API and its clients (see CHANGELOG.md).
__version__ = "0.1.0"
