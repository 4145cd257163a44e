"""What a call's metadata and peer say about the caller."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

import grpc

from authsvc.core.errors import MissingCredentials, TokenInvalid

__all__ = ["bearer_token", "client_ip", "metadata_value", "user_agent"]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# gRPC libraries append their own product token to the caller's user agent.
_GRPC_SUFFIXES = (
    " grpc-python-asyncio/",
    " grpc-python/",
    " grpc-c/",
    " grpc-node-js/",
    " grpc-go/",
    " grpc-java-",
)


def metadata_value(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str | None:
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key:
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def has_metadata(context: grpc.aio.ServicerContext[Any, Any], key: str) -> bool:
    return metadata_value(context, key) is not None


def bearer_token(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The token of an `authorization: Bearer <token>` entry."""
    header = metadata_value(context, "authorization")
    scheme, _, token = (header or "").strip().partition(" ")
    if not scheme:
        raise MissingCredentials("authorization metadata with a Bearer token is required")
    if scheme.lower() != "bearer":
        raise TokenInvalid("authorization metadata must be 'Bearer <token>'")
    token = token.strip()
    if not token:
        raise MissingCredentials("authorization metadata with a Bearer token is required")
    return token


def user_agent(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's user agent, without the gRPC library's own product token."""
    agent = metadata_value(context, "user-agent") or ""
    cut = min((i for s in _GRPC_SUFFIXES if (i := agent.find(s)) > 0), default=len(agent))
    return agent[:cut].strip()


def _peer_ip(peer: str) -> IpAddress | None:
    # "ipv4:10.0.0.1:5000", "ipv6:[::1]:5000", "ipv6:%5B::1%5D:5000", "unix:/path"
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        host = rest.rsplit(":", 1)[0]
    elif kind == "ipv6":
        host = rest.replace("%5B", "[").replace("%5D", "]").rsplit(":", 1)[0].strip("[]")
    else:
        return None
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _is_trusted(address: IpAddress, proxies: Sequence[IpNetwork]) -> bool:
    return any(address in network for network in proxies)


def client_ip(
    context: grpc.aio.ServicerContext[Any, Any], trusted_proxies: Sequence[IpNetwork]
) -> str:
    """The client's address: the peer, or what trusted proxies forwarded.

    x-forwarded-for is read right to left and only while each hop is a trusted
    proxy, so a client cannot choose the address we record by sending one.
    """
    address = _peer_ip(context.peer() or "")
    if address is None:
        return ""
    forwarded = metadata_value(context, "x-forwarded-for")
    if forwarded and _is_trusted(address, trusted_proxies):
        for hop in reversed([h.strip() for h in forwarded.split(",")]):
            try:
                hop_address = ipaddress.ip_address(hop)
            except ValueError:
                break
            address = hop_address
            if not _is_trusted(hop_address, trusted_proxies):
                break
    return str(address)
