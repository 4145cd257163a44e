"""Describe a device from its user agent, with the maintained ua-parser rules."""

from __future__ import annotations

import functools

from ua_parser import parse

from authsvc.core.models import DeviceInfo, DeviceType

__all__ = ["MAX_USER_AGENT", "describe_device", "warm_up"]

_MOBILE_OS = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Firefox OS"})
MAX_USER_AGENT = 512


def _version(family: str, *parts: str | None) -> str:
    numbers = ".".join(p for p in parts if p)
    return f"{family} {numbers}" if numbers else family


@functools.lru_cache(maxsize=4096)
def _parse(user_agent: str) -> tuple[DeviceType, str, str]:
    if not user_agent:
        return DeviceType.UNKNOWN, "", ""
    result = parse(user_agent)
    agent, os_, device = result.user_agent, result.os, result.device
    browser = "" if agent is None else _version(agent.family, agent.major, agent.minor)
    os_name = "" if os_ is None else _version(os_.family, os_.major, os_.minor)
    os_family = "" if os_ is None else os_.family
    device_family = "" if device is None else device.family
    device_brand = "" if device is None or device.brand is None else device.brand
    if device_family == "Spider":
        kind = DeviceType.BOT
    elif device_family == "iPad" or "Tablet" in device_brand or "Kindle" in device_family:
        kind = DeviceType.TABLET
    elif os_family == "Android" and "Mobile" not in user_agent:
        # Android tablets are the Android browsers that omit the "Mobile" token.
        kind = DeviceType.TABLET
    elif os_family in _MOBILE_OS:
        kind = DeviceType.MOBILE
    elif user_agent.startswith("Mozilla/") and os_ is not None:
        kind = DeviceType.DESKTOP
    else:
        # gRPC libraries, curl, SDKs: software rather than a person's browser.
        kind = DeviceType.OTHER
    return kind, browser, os_name


def describe_device(*, user_agent: str, ip_address: str, device_name: str) -> DeviceInfo:
    user_agent = user_agent[:MAX_USER_AGENT]
    kind, browser, os_name = _parse(user_agent)
    return DeviceInfo(
        user_agent=user_agent,
        ip_address=ip_address,
        device_type=kind,
        browser=browser,
        os=os_name,
        device_name=device_name,
    )


def warm_up() -> None:
    """Compile the parser's rules now rather than inside the first Login (~100 ms)."""
    _parse.__wrapped__("Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0")
