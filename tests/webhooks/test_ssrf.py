"""The webhook SSRF guard: which URLs Pulse may call, literal or resolved."""

import ipaddress
from collections.abc import Callable

import pytest

from pulse.webhooks.ssrf import Allowlist, IPAddress, RefusedUrl, check_literal, check_url

NOTHING = Allowlist()


def _resolving_to(*addresses: str) -> Callable[[str, int], list[IPAddress]]:
    def resolver(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(address) for address in addresses]

    return resolver


REFUSED = [
    pytest.param("127.0.0.1", id="loopback-v4"),
    pytest.param("[::1]", id="loopback-v6"),
    pytest.param("10.0.0.1", id="private-10"),
    pytest.param("172.16.5.4", id="private-172"),
    pytest.param("192.168.1.1", id="private-192"),
    pytest.param("[fd12:3456::1]", id="private-v6-ula"),
    pytest.param("169.254.10.1", id="link-local-v4"),
    pytest.param("[fe80::1]", id="link-local-v6"),
    pytest.param("224.0.0.1", id="multicast-v4"),
    pytest.param("[ff02::1]", id="multicast-v6"),
    pytest.param("240.0.0.1", id="reserved-v4"),
    pytest.param("0.0.0.0", id="unspecified-v4"),
    pytest.param("[::]", id="unspecified-v6"),
    pytest.param("169.254.169.254", id="metadata-v4"),
    pytest.param("[fd00:ec2::254]", id="metadata-v6"),
    pytest.param("100.64.0.1", id="shared-address-space"),
    pytest.param("[::ffff:10.0.0.1]", id="ipv4-mapped-private"),
]


@pytest.mark.parametrize("host", REFUSED)
def test_literal_addresses_in_refused_ranges_are_refused(host: str) -> None:
    with pytest.raises(RefusedUrl):
        check_literal(f"http://{host}/hook", NOTHING)
    with pytest.raises(RefusedUrl):
        check_url(f"https://{host}:8443/hook", NOTHING)


def test_the_metadata_address_is_named() -> None:
    with pytest.raises(RefusedUrl, match="metadata"):
        check_url("http://169.254.169.254/latest/meta-data/", NOTHING)


@pytest.mark.parametrize("host", ["93.184.215.14", "[2606:2800:21f:cb07:6820:80da:af6b:8b2c]"])
def test_public_literal_addresses_pass(host: str) -> None:
    check_literal(f"https://{host}/hook", NOTHING)
    assert check_url(f"https://{host}/hook", NOTHING) == [ipaddress.ip_address(host.strip("[]"))]


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://x", "example.com/x"])
def test_only_http_and_https_are_allowed(url: str) -> None:
    with pytest.raises(RefusedUrl, match="only http and https"):
        check_url(url, NOTHING, resolver=_resolving_to("93.184.215.14"))
    with pytest.raises(RefusedUrl):
        check_literal(url, NOTHING)


def test_a_name_resolving_to_loopback_is_refused_unless_allowlisted() -> None:
    resolver = _resolving_to("127.0.0.1")
    with pytest.raises(RefusedUrl, match="loopback"):
        check_url("http://hooks.example.com/x", NOTHING, resolver=resolver)
    # The gateway does not resolve names: only the worker's check refuses it.
    check_literal("http://hooks.example.com/x", NOTHING)
    check_url("http://hooks.example.com/x", Allowlist.parse("hooks.example.com"), resolver=resolver)
    check_url("http://hooks.example.com/x", Allowlist.parse("127.0.0.0/8"), resolver=resolver)


def test_one_refused_address_among_public_ones_refuses_the_name() -> None:
    with pytest.raises(RefusedUrl, match="private"):
        check_url("http://mixed.example.com/", NOTHING, resolver=_resolving_to("93.184.215.14", "10.1.2.3"))


def test_localhost_really_resolves_and_is_refused() -> None:
    with pytest.raises(RefusedUrl):
        check_url("http://localhost:8025/webhooks/x", NOTHING)
    assert check_url("http://localhost:8025/webhooks/x", Allowlist.parse("127.0.0.1,::1")) != []


@pytest.mark.parametrize(
    ("allowlist", "url"),
    [
        pytest.param("127.0.0.1,localhost", "http://127.0.0.1:8025/webhooks/a", id="address"),
        pytest.param("localhost", "http://LOCALHOST:8025/webhooks/a", id="host-case-insensitive"),
        pytest.param("10.0.0.0/8", "http://10.20.30.40/hook", id="cidr-v4"),
        pytest.param("fd00::/8", "http://[fd12::1]/hook", id="cidr-v6"),
        pytest.param(" 192.168.0.0/16 , ", "https://192.168.3.4/hook", id="spaces-and-empties"),
    ],
)
def test_allowlisted_hosts_and_networks_pass(allowlist: str, url: str) -> None:
    check_literal(url, Allowlist.parse(allowlist))
    check_url(url, Allowlist.parse(allowlist))


def test_a_network_does_not_allow_addresses_outside_it() -> None:
    with pytest.raises(RefusedUrl):
        check_literal("http://10.0.0.1/hook", Allowlist.parse("192.168.0.0/16,example.com"))


def test_unresolvable_names_are_refused() -> None:
    def fail(host: str, port: int) -> list[IPAddress]:
        raise OSError("Name or service not known")

    with pytest.raises(RefusedUrl, match="cannot resolve"):
        check_url("https://nowhere.invalid/", NOTHING, resolver=fail)


def test_a_host_or_address_with_a_port_is_allowlisted_on_that_port_only() -> None:
    # What `make run` sets: the sandbox's port, not every service listening on this machine.
    allowlist = Allowlist.parse("127.0.0.1:8025,localhost:8025,[::1]:8025,10.0.0.0/8:8443")
    for url in (
        "http://127.0.0.1:8025/webhooks/a",
        "http://localhost:8025/webhooks/a",
        "http://[::1]:8025/webhooks/a",
        "https://10.1.2.3:8443/hook",
    ):
        check_literal(url, allowlist)
        check_url(url, allowlist)
    for url in (
        "http://127.0.0.1:9104/metrics",  # the webhook worker's metrics
        "http://127.0.0.1/",
        "http://[::1]:5555/api/workers",
        "https://10.1.2.3/hook",
    ):
        with pytest.raises(RefusedUrl):
            check_literal(url, allowlist)
    # Flower, by name: the name is not allowlisted on that port, and it resolves to loopback.
    with pytest.raises(RefusedUrl, match="loopback"):
        check_url("http://localhost:5555/api/worker/shutdown/celery@host", allowlist)


@pytest.mark.parametrize("entry", ["localhost:http", "127.0.0.1:0", "[::1]:70000"])
def test_an_allowlist_entry_with_a_bad_port_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="port must be a number"):
        Allowlist.parse(entry)
