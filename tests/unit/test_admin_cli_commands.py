"""`authsvc admin` has one command per AdminService RPC."""

from __future__ import annotations

from authsvc.admin_cli import COMMANDS
from authsvc.v1 import admin_service_pb2 as pb


def test_every_admin_rpc_has_a_command() -> None:
    service = pb.DESCRIPTOR.services_by_name["AdminService"]

    assert sorted(command.rpc for command in COMMANDS.values()) == sorted(
        method.name for method in service.methods
    )
