"""`authsvc admin <command>`: one command per AdminService RPC, over gRPC to a running
server, as an operator. Each prints the answer as JSON (protobuf's mapping, every field
shown) and exits 0, or prints the ErrorInfo reason on stderr and exits 1 (2: a usage or
configuration error, nothing sent).

The operator's service key comes from a file (--operator-key-file, or
AUTHSVC_OPERATOR_KEY_FILE) or from AUTHSVC_OPERATOR_KEY, never from an argument, which
`ps` would show to every user of the machine. With a client certificate configured
(AUTHSVC_TLS_CLIENT_CERT_FILE) an operator identity needs no key.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from authsvc.config import OPERATOR_KEY_FILE_VARIABLE, OPERATOR_KEY_VARIABLE, Config, ConfigError
from authsvc.tls import client_tls
from authsvc.v1 import admin_service_pb2 as pb
from authsvc.v1 import admin_service_pb2_grpc
from authsvc.v1 import auth_service_pb2 as auth_pb

__all__ = ["COMMANDS", "add_admin_commands", "run_admin_command"]

# Longer than any one admin call should take; a call that hits it says DEADLINE_EXCEEDED.
_TIMEOUT_SECONDS = 30.0

_Build = Callable[[argparse.Namespace], Message]


@dataclass(frozen=True, slots=True)
class AdminCommand:
    """One `authsvc admin` command: the RPC it calls and how its request is built."""

    rpc: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    request: _Build
    timeout: float = _TIMEOUT_SECONDS


def _user_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user-id", required=True, help="the user (UUID)")


def _reason(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reason", required=True, help="why, for the audit trail (at most 200 characters)"
    )


def _user_id_and_reason(parser: argparse.ArgumentParser) -> None:
    _user_id(parser)
    _reason(parser)


def _id_or_email(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--user-id", help="the user (UUID)")
    which.add_argument("--email", help="the account's email, in any spelling")


def _page(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--page-size", type=int, default=0, help="at most this many (50)")
    parser.add_argument(
        "--page-token", default="", help="next_page_token of the previous page's answer"
    )


def _list_user_sessions(parser: argparse.ArgumentParser) -> None:
    _user_id(parser)
    _page(parser)


def _session_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session_id", help="the session (UUID), live or ended")


def _clear_login_throttle(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--email", help="clear this email's lockouts")
    which.add_argument("--ip-address", help="clear this client address's lockouts")


def _instant(text: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not an RFC 3339 time: {text!r} (2026-01-01T00:00:00Z)"
        ) from exc
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)


def _list_audit_events(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user-id", default="", help="only this user's events (UUID)")
    parser.add_argument(
        "--event-type",
        action="append",
        default=[],
        dest="event_types",
        help="only events of this type (login_failed); repeat for several",
    )
    parser.add_argument(
        "--after", type=_instant, default=None, help="only events at or after this time"
    )
    parser.add_argument("--before", type=_instant, default=None, help="only events before it")
    _page(parser)


def _audit_request(args: argparse.Namespace) -> Message:
    request = pb.ListAuditEventsRequest(
        user_id=args.user_id,
        event_types=args.event_types,
        page_size=args.page_size,
        page_token=args.page_token,
    )
    if args.after is not None:
        request.occurred_after.FromDatetime(args.after)
    if args.before is not None:
        request.occurred_before.FromDatetime(args.before)
    return request


def _by_id_or_email(message: type[Any]) -> _Build:
    def build(args: argparse.Namespace) -> Message:
        built: Message = (
            message(user_id=args.user_id) if args.user_id else message(email=args.email)
        )
        return built

    return build


def _subject(args: argparse.Namespace) -> Message:
    if args.email is not None:
        return pb.ClearLoginThrottleRequest(email=args.email)
    return pb.ClearLoginThrottleRequest(ip_address=args.ip_address)


# desktop, mobile, ...; "unknown" for a user agent that names no device (UNSPECIFIED).
_DEVICE_TYPES = {
    name.removeprefix("DEVICE_TYPE_").lower().replace("unspecified", "unknown"): value
    for name, value in auth_pb.DeviceType.items()
}


def _revoke_sessions(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--user-id",
        action="append",
        default=[],
        dest="user_ids",
        help="sessions of this user (UUID); repeat for several (at most 1000)",
    )
    parser.add_argument(
        "--created-after", type=_instant, default=None, help="sessions created at or after it"
    )
    parser.add_argument(
        "--created-before", type=_instant, default=None, help="sessions created before it"
    )
    parser.add_argument(
        "--ip-cidr", default="", help="sessions whose login address is in it (203.0.113.0/24)"
    )
    parser.add_argument(
        "--user-agent-contains", default="", help="sessions whose user agent contains it"
    )
    parser.add_argument(
        "--device-type",
        action="append",
        default=[],
        dest="device_types",
        choices=sorted(_DEVICE_TYPES),
        help="sessions of this device type; repeat for several",
    )
    parser.add_argument(
        "--signing-key-id",
        default="",
        help="sessions whose latest access token this key (kid) signed",
    )
    parser.add_argument(
        "--match-all",
        action="store_true",
        help="every live session (required when no other filter is given)",
    )
    _reason(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="count and sample the matches; end nothing"
    )


def _revoke_sessions_request(args: argparse.Namespace) -> Message:
    which = pb.SessionFilter(
        user_ids=args.user_ids,
        ip_cidr=args.ip_cidr,
        user_agent_contains=args.user_agent_contains,
        device_types=[_DEVICE_TYPES[name] for name in args.device_types],
        signing_key_id=args.signing_key_id,
        match_all=args.match_all,
    )
    if args.created_after is not None:
        which.created_after.FromDatetime(args.created_after)
    if args.created_before is not None:
        which.created_before.FromDatetime(args.created_before)
    return pb.RevokeSessionsRequest(filter=which, reason=args.reason, dry_run=args.dry_run)


# By the proto's names: --state failed is WEBHOOK_DELIVERY_STATE_FAILED.
_DELIVERY_STATES = {
    name.removeprefix("WEBHOOK_DELIVERY_STATE_").lower(): number
    for name, number in pb.WebhookDeliveryState.items()
    if number != pb.WEBHOOK_DELIVERY_STATE_UNSPECIFIED
}


def _list_webhook_deliveries(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        choices=sorted(_DELIVERY_STATES),
        default="failed",
        help="only deliveries in this state (failed)",
    )
    _page(parser)


def _delivery_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--delivery-id", required=True, help="the delivery (its webhook-id)")


def _user_factor(parser: argparse.ArgumentParser) -> None:
    _user_id(parser)
    parser.add_argument("--factor-id", required=True, help="the factor (UUID)")
    parser.add_argument(
        "--reason", default="", help="why, for the audit trail (optional, at most 200 characters)"
    )


def _second_factor_required(parser: argparse.ArgumentParser) -> None:
    _user_id(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--required", dest="required", action="store_true", help="require a second factor"
    )
    which.add_argument(
        "--not-required", dest="required", action="store_false", help="lift the requirement"
    )


# Every AdminService RPC has one (a test checks it against the service's descriptor).
COMMANDS: Mapping[str, AdminCommand] = {
    "get-user": AdminCommand(
        "GetUser",
        "show an account, by id or email, with its live-session count",
        _id_or_email,
        _by_id_or_email(pb.GetUserRequest),
    ),
    "list-user-sessions": AdminCommand(
        "ListUserSessions",
        "list a user's live sessions, a page at a time",
        _list_user_sessions,
        lambda a: pb.ListUserSessionsRequest(
            user_id=a.user_id, page_size=a.page_size, page_token=a.page_token
        ),
    ),
    "get-session": AdminCommand(
        "GetSession",
        "show any session, live or ended: when, why and by whom it ended",
        _session_id,
        lambda a: pb.AdminServiceGetSessionRequest(session_id=a.session_id),
    ),
    "revoke-user-sessions": AdminCommand(
        "RevokeUserSessions",
        "end every session of a user; they can sign in again",
        _user_id_and_reason,
        lambda a: pb.RevokeUserSessionsRequest(user_id=a.user_id, reason=a.reason),
    ),
    "disable-user": AdminCommand(
        "DisableUser",
        "end every session of a user and refuse their sign-ins until enabled",
        _user_id_and_reason,
        lambda a: pb.DisableUserRequest(user_id=a.user_id, reason=a.reason),
    ),
    "enable-user": AdminCommand(
        "EnableUser",
        "let a disabled user sign in again",
        _user_id,
        lambda a: pb.EnableUserRequest(user_id=a.user_id),
    ),
    "delete-user": AdminCommand(
        "DeleteUser",
        "end every session of a user and erase the account's personal data",
        _user_id_and_reason,
        lambda a: pb.DeleteUserRequest(user_id=a.user_id, reason=a.reason),
    ),
    "session-lineage": AdminCommand(
        "GetSessionLineage",
        "show a session's refresh history (newest 1000 steps) and where reuse was detected",
        _session_id,
        lambda a: pb.GetSessionLineageRequest(session_id=a.session_id),
    ),
    "clear-login-throttle": AdminCommand(
        "ClearLoginThrottle",
        "lift the login lockouts of an email or a client address",
        _clear_login_throttle,
        _subject,
    ),
    "list-audit-events": AdminCommand(
        "ListAuditEvents",
        "list audit events, newest first, a page at a time",
        _list_audit_events,
        _audit_request,
    ),
    "create-password-reset-token": AdminCommand(
        "CreatePasswordResetToken",
        "issue a single-use password-reset token for the caller to deliver (sensitive)",
        _id_or_email,
        _by_id_or_email(pb.CreatePasswordResetTokenRequest),
    ),
    "revoke-sessions": AdminCommand(
        "RevokeSessions",
        "end every live session a filter selects (--dry-run: count and sample them)",
        _revoke_sessions,
        _revoke_sessions_request,
        # Batches of 500 sessions: a large run takes longer than one call's usual bound;
        # one cut short is finished by running it again.
        timeout=600.0,
    ),
    "list-webhook-deliveries": AdminCommand(
        "ListWebhookDeliveries",
        "list webhook deliveries in a state (failed), newest first, a page at a time",
        _list_webhook_deliveries,
        lambda a: pb.ListWebhookDeliveriesRequest(
            state=_DELIVERY_STATES[a.state],
            page_size=a.page_size,
            page_token=a.page_token,
        ),
    ),
    "retry-webhook-delivery": AdminCommand(
        "RetryWebhookDelivery",
        "queue a failed webhook delivery again, with fresh attempts",
        _delivery_id,
        lambda a: pb.RetryWebhookDeliveryRequest(delivery_id=a.delivery_id),
    ),
    "list-user-factors": AdminCommand(
        "ListUserFactors",
        "list a user's second factors (never a secret) and unused recovery codes",
        _user_id,
        lambda a: pb.ListUserFactorsRequest(user_id=a.user_id),
    ),
    "remove-user-factor": AdminCommand(
        "RemoveUserFactor",
        "remove a user's second factor (a lost phone) and end all their sessions",
        _user_factor,
        lambda a: pb.RemoveUserFactorRequest(
            user_id=a.user_id, factor_id=a.factor_id, reason=a.reason
        ),
    ),
    "set-second-factor-required": AdminCommand(
        "SetSecondFactorRequired",
        "require (or stop requiring) a second factor of an account from its next login",
        _second_factor_required,
        lambda a: pb.SetSecondFactorRequiredRequest(user_id=a.user_id, required=a.required),
    ),
}


def add_admin_commands(admin: Any, start: Callable[..., int]) -> None:
    """Add each command to the `admin` subparsers, `start` as its entry point."""
    for name, command in COMMANDS.items():
        # No abbreviations: `--operator-key KEY` must not pass for --operator-key-file.
        parser = admin.add_parser(
            name, help=command.help, description=command.help, allow_abbrev=False
        )
        parser.add_argument(
            "--address",
            default=None,
            help="HOST:PORT of the server (default: AUTHSVC_HOST and AUTHSVC_PORT, "
            "127.0.0.1 for a wildcard host)",
        )
        parser.add_argument(
            "--operator-key-file",
            type=Path,
            default=None,
            help=f"a file holding the operator's service key (or {OPERATOR_KEY_FILE_VARIABLE}"
            f", or the key itself in {OPERATOR_KEY_VARIABLE}; never an argument)",
        )
        command.arguments(parser)
        parser.set_defaults(start=start, admin_command=name)


class _UsageError(Exception):
    pass


def _operator_key(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """The key from the file named, else the environment; None if neither gives one."""
    path: Path | None = args.operator_key_file
    if path is None and environ.get(OPERATOR_KEY_FILE_VARIABLE):
        path = Path(environ[OPERATOR_KEY_FILE_VARIABLE])
    if path is not None:
        try:
            key = path.read_text().strip()
        except OSError as exc:
            raise _UsageError(f"cannot read the operator key file {path}: {exc.strerror}") from exc
        if not key:
            raise _UsageError(f"the operator key file {path} is empty")
        return key
    key = environ.get(OPERATOR_KEY_VARIABLE, "").strip()
    return key or None


def _channel(config: Config, address: str | None) -> grpc.Channel:
    if address is None:
        host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host  # noqa: S104
        address = f"{host}:{config.port}"
    tls = client_tls(config)
    if tls is None:
        return grpc.insecure_channel(address)
    name_override = ("grpc.ssl_target_name_override", tls.server_name)
    return grpc.secure_channel(address, tls.credentials, options=[name_override])


def _failure_reason(error: grpc.RpcError) -> str:
    """The ErrorInfo reason of a failed call, else its status code's name."""
    status = rpc_status.from_call(error)
    for detail in () if status is None else status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason: str = info.reason
            return reason
    code: grpc.StatusCode = error.code()
    return code.name


def run_admin_command(
    args: argparse.Namespace, config: Config, environ: Mapping[str, str] | None = None
) -> int:
    """Call the command's RPC and print the answer; the exit code."""
    environ = os.environ if environ is None else environ
    command = COMMANDS[args.admin_command]
    try:
        key = _operator_key(args, environ)
        if key is None and config.tls_client_cert_file is None:
            raise _UsageError(
                f"no operator credential: set {OPERATOR_KEY_VARIABLE} or "
                f"{OPERATOR_KEY_FILE_VARIABLE}, or pass --operator-key-file"
            )
        request = command.request(args)
        channel = _channel(config, args.address)
    except (_UsageError, ConfigError) as exc:
        print(f"authsvc admin: {exc}", file=sys.stderr)
        return 2
    metadata = () if key is None else (("authorization", f"Bearer {key}"),)
    with channel:
        call = getattr(admin_service_pb2_grpc.AdminServiceStub(channel), command.rpc)
        try:
            response = call(request, metadata=metadata, timeout=command.timeout)
        except grpc.RpcError as exc:
            details = exc.details() if hasattr(exc, "details") else ""
            print(f"authsvc admin: {_failure_reason(exc)}: {details}", file=sys.stderr)
            return 1
    answer = json_format.MessageToDict(
        response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    print(json.dumps(answer, indent=2, sort_keys=True))
    return 0
