"""Statuses the edge raises itself (deadline, bug) carry an ErrorInfo like every other."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

from authsvc.api.errors import deadline_exceeded_status, internal_status


def _error_info(status: grpc.Status) -> tuple[int, str, str, str]:
    [(key, value)] = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    details = status_pb2.Status.FromString(value)
    [packed] = details.details
    info = error_details_pb2.ErrorInfo()
    assert packed.Unpack(info)
    return details.code, details.message, info.domain, info.reason


def test_deadline_exceeded_status_carries_an_error_info_named_after_its_code() -> None:
    status = deadline_exceeded_status()

    assert status.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert _error_info(status) == (
        grpc.StatusCode.DEADLINE_EXCEEDED.value[0],
        "deadline exceeded",
        "authsvc",
        "DEADLINE_EXCEEDED",
    )


def test_internal_status_says_nothing_of_the_bug() -> None:
    status = internal_status()

    assert status.code == grpc.StatusCode.INTERNAL
    assert _error_info(status)[1:] == ("internal error", "authsvc", "INTERNAL")
