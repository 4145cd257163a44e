"""Telling "another process serves this port" apart from other bind failures."""

from __future__ import annotations

import errno
import socket

__all__ = ["BindFailed", "PortInUse", "bind_failure", "bind_listener", "probe_port"]


class BindFailed(Exception):
    """The server could not bind its address; the message says why, for the operator."""


class PortInUse(BindFailed):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"port in use: {host}:{port} is already served by another process")


def probe_port(host: str, port: int) -> None:
    """Raise PortInUse if some process has host:port bound, BindFailed if it cannot be bound.

    The probe binds without SO_REUSEPORT, so it fails against any socket already there,
    SO_REUSEPORT or not: the way to refuse joining another server's port group. It sets
    SO_REUSEADDR, as grpc does, so connections of an earlier run in TIME_WAIT do not count.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise bind_failure(host, port, exc) from exc


def bind_listener(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to host:port (port 0: a free one), for a server to listen on;
    BindFailed if it cannot be bound.

    `reuse_port`: join a port other processes serve too (SO_REUSEPORT), as workers do.
    Without it, any socket already on the port fails the bind, as grpc's does.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise bind_failure(host, port, exc) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise bind_failure(host, port, exc) from exc
    return sock


def bind_failure(host: str, port: int, exc: OSError) -> BindFailed:
    if exc.errno == errno.EADDRINUSE:
        return PortInUse(host, port)
    return BindFailed(f"cannot bind {host}:{port}: {exc.strerror or exc}")
