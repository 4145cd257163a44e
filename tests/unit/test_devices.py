"""describe_device: what a session list shows about the device a login came from."""

from __future__ import annotations

import pytest

from authsvc.core.models import DeviceType
from authsvc.domain.devices import describe_device

CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
SAFARI_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.6 Safari/605.1.15"
)
IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1"
)
ANDROID_PHONE_CHROME = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36"
)
IPAD_SAFARI = (
    "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1"
)
# Android tablets send the same shape as phones without the "Mobile" token.
ANDROID_TABLET_CHROME = (
    "Mozilla/5.0 (Linux; Android 13; SM-X706B) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def describe(user_agent: str) -> tuple[DeviceType, str, str]:
    device = describe_device(user_agent=user_agent, ip_address="192.0.2.1", device_name="")
    return device.device_type, device.browser, device.os


@pytest.mark.parametrize(
    ("user_agent", "browser", "os"),
    [
        (CHROME_MAC, "Chrome", "Mac OS X"),
        (FIREFOX_WINDOWS, "Firefox", "Windows"),
        (SAFARI_MAC, "Safari", "Mac OS X"),
    ],
    ids=["chrome-mac", "firefox-windows", "safari-mac"],
)
def test_desktop_browsers_are_desktop(user_agent: str, browser: str, os: str) -> None:
    device_type, found_browser, found_os = describe(user_agent)

    assert device_type is DeviceType.DESKTOP
    assert found_browser.startswith(browser)
    assert found_os.startswith(os)


def test_desktop_browser_and_os_carry_their_versions() -> None:
    _, browser, os = describe(CHROME_MAC)

    assert (browser, os) == ("Chrome 131.0", "Mac OS X 10.15")


@pytest.mark.parametrize(
    ("user_agent", "os"),
    [(IPHONE_SAFARI, "iOS"), (ANDROID_PHONE_CHROME, "Android")],
    ids=["iphone-safari", "android-phone-chrome"],
)
def test_phones_are_mobile(user_agent: str, os: str) -> None:
    device_type, _, found_os = describe(user_agent)

    assert device_type is DeviceType.MOBILE
    assert found_os.startswith(os)


@pytest.mark.parametrize(
    ("user_agent", "os"),
    [(IPAD_SAFARI, "iOS"), (ANDROID_TABLET_CHROME, "Android")],
    ids=["ipad-safari", "android-tablet-without-mobile-token"],
)
def test_tablets_are_tablet(user_agent: str, os: str) -> None:
    device_type, _, found_os = describe(user_agent)

    assert device_type is DeviceType.TABLET
    assert found_os.startswith(os)


def test_googlebot_is_a_bot() -> None:
    device_type, browser, _ = describe(GOOGLEBOT)

    assert device_type is DeviceType.BOT
    assert browser.startswith("Googlebot")


@pytest.mark.parametrize(
    "user_agent",
    ["curl/8.5.0", "grpc-go/1.60.0", "grpc-python-asyncio/1.85.1"],
    ids=["curl", "grpc-go", "grpc-python"],
)
def test_non_browser_clients_are_other(user_agent: str) -> None:
    device_type, _, _ = describe(user_agent)

    assert device_type is DeviceType.OTHER


def test_empty_user_agent_is_unknown_with_no_browser_or_os() -> None:
    assert describe("") == (DeviceType.UNKNOWN, "", "")


def test_over_long_user_agent_is_truncated_to_512_characters() -> None:
    long_agent = CHROME_MAC + " x" * 1000

    device = describe_device(user_agent=long_agent, ip_address="192.0.2.1", device_name="")

    assert device.user_agent == long_agent[:512]
    assert device.device_type is DeviceType.DESKTOP


def test_user_agent_of_512_characters_is_kept_whole() -> None:
    agent = (CHROME_MAC + " x" * 1000)[:512]

    device = describe_device(user_agent=agent, ip_address="192.0.2.1", device_name="")

    assert device.user_agent == agent


def test_ip_address_and_device_name_are_kept_as_given() -> None:
    device = describe_device(user_agent=CHROME_MAC, ip_address="192.0.2.1", device_name="Laptop")

    assert (device.ip_address, device.device_name) == ("192.0.2.1", "Laptop")
