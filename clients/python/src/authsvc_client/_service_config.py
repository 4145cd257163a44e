"""The published gRPC service config: which RPCs the channel retries, and how."""

from __future__ import annotations

from importlib.resources import files

__all__ = ["DEFAULT_SERVICE_CONFIG"]

DEFAULT_SERVICE_CONFIG: str = (
    files("authsvc_client.v1").joinpath("service_config.json").read_text(encoding="utf-8")
)
"""The JSON text `AuthClient.connect` gives its channel as `grpc.service_config` unless
you pass your own: retries on UNAVAILABLE for the RPCs that are safe to repeat (Refresh,
because this client sends an idempotency key with it; ValidateToken, GetJwks, ListSessions,
GetSession, RevokeSession, Logout), never for Register, Login, ChangePassword or
ResetPassword. A copy of the repository's clients/service_config.json."""
