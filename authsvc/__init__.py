"""authsvc: a session and token service over gRPC, backed by PostgreSQL."""

import os
from importlib.resources import files

# gRPC's C core writes its own log lines to stderr (a TLS handshake a client botches, a
# GOAWAY), which any client can trigger and which break the JSON-lines log. Off unless
# the operator sets GRPC_VERBOSITY; set here, before anything imports grpc, because the
# core reads it once, at import.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

# The release version of the service, its API and its clients (see CHANGELOG.md), declared
# once in VERSION beside this file: read here, so an editable checkout never reports a stale
# one, and by both pyprojects at build time. The Python client links to the same file.
__version__ = files(__name__).joinpath("VERSION").read_text(encoding="utf-8").strip()
