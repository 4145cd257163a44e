"""Statuses the edge raises itself (deadline, bug) carry an ErrorInfo like every other."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from authsvc.api.errors import internal_status, plain_status


def _error_info(status: grpc.Status) -> tuple[int, str, str, str]:
    [(key, value)] = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    details = status_pb2.Status.FromString(value)
    [packed] = details.details
    info = error_details_pb2.ErrorInfo()
    assert packed.Unpack(info)
    return details.code, details.message, info.domain, info.reason


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL], ids=str
)
def test_plain_status_carries_an_error_info_named_after_its_code(code: grpc.StatusCode) -> None:
    status = plain_status(code, "what happened")

    assert status.code == code
    assert _error_info(status) == (code.value[0], "what happened", "authsvc", code.name)


def test_internal_status_says_nothing_of_the_bug() -> None:
    assert _error_info(internal_status())[1:] == ("internal error", "authsvc", "INTERNAL")
