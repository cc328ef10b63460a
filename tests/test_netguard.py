"""The SSRF guard shared by input fetches and webhooks: what it refuses, what fetch_allow opens,
and that it connects to the address it checked (real servers on loopback, real TLS)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import httpx
import pytest

from openreel.netguard import AddressPolicy, AddressRefused, GuardedTransport, guarded_client
from tests.http_servers import Reply, ScriptedServer
from tests.stack import Certificate

TIMEOUT = httpx.Timeout(5.0)

# Names a hostile DNS could answer with; the test resolver stands in for it (no network needed).
FAKE_DNS = {
    "metadata.google.internal": ["169.254.169.254"],
    "intranet.example": ["10.0.0.5"],
    "mixed.example": ["93.184.215.14", "127.0.0.1"],  # one public and one loopback answer
    "v6-mapped.example": ["::ffff:10.1.2.3"],
    "pinned.test": ["127.0.0.1"],
}

REFUSED_URLS = [
    "http://127.0.0.1/",
    "http://127.0.0.2:8080/",
    "http://localhost/",
    "http://[::1]/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://198.18.0.1/",  # benchmarking
    "http://169.254.169.254/latest/meta-data/",  # AWS, GCP, Azure instance metadata
    "http://100.100.100.200/",  # Alibaba metadata
    "http://168.63.129.16/",  # Azure wire server (a public address)
    "http://192.0.0.192/",  # Oracle Cloud metadata
    "http://[fd00:ec2::254]/",  # AWS metadata over IPv6
    "http://[fe80::1]/",
    "http://[fec0::1]/",  # deprecated site-local
    "http://[fc00::1]/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://240.0.0.1/",  # reserved
    "http://255.255.255.255/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
    "http://[::ffff:169.254.169.254]/",
    "http://[::127.0.0.1]/",  # IPv4-compatible IPv6
    "http://[2002:7f00:1::]/",  # 6to4 wrapping 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 wrapping 169.254.169.254
    "http://2130706433/",  # 127.0.0.1 as one decimal number
    "http://0x7f000001/",  # ... in hex
    "http://017700000001/",  # ... in octal
    "http://127.1/",  # ... shortened
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://intranet.example/",
    "http://mixed.example/",
    "http://v6-mapped.example/",
    "file:///etc/passwd",
    "ftp://127.0.0.1/",
]


def fake_resolve(host: str, port: int) -> list[str]:
    if host in FAKE_DNS:
        return FAKE_DNS[host]
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    running = ScriptedServer().start()
    yield running
    running.stop()


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_unsafe_addresses_are_refused_before_connecting(url: str) -> None:
    with guarded_client([], timeout=TIMEOUT, follow_redirects=False, resolve=fake_resolve) as client:
        with pytest.raises(AddressRefused):
            client.get(url)


@pytest.mark.parametrize("allow", ["127.0.0.1", "127.0.0.0/8", "localhost", "::ffff:127.0.0.1/128"])
def test_fetch_allow_opens_names_addresses_and_networks(server: ScriptedServer, allow: str) -> None:
    server.route("/ok", Reply(200, b"hello"))
    url = server.url("/ok").replace("127.0.0.1", "localhost") if allow == "localhost" else server.url("/ok")
    with guarded_client([allow], timeout=TIMEOUT, follow_redirects=False) as client:
        assert client.get(url).content == b"hello"


def test_allowing_one_address_does_not_allow_its_neighbours(server: ScriptedServer) -> None:
    neighbour = ScriptedServer(host="127.0.0.2").start()
    try:
        neighbour.route("/secret", Reply(200, b"secret"))
        with guarded_client(["127.0.0.1", "::1"], timeout=TIMEOUT, follow_redirects=False) as client:
            with pytest.raises(AddressRefused, match="loopback"):
                client.get(neighbour.url("/secret"))
        assert neighbour.hits == []
    finally:
        neighbour.stop()


def test_every_redirect_hop_is_checked(server: ScriptedServer) -> None:
    neighbour = ScriptedServer(host="127.0.0.2").start()
    try:
        neighbour.route("/secret", Reply(200, b"secret"))
        server.route("/hop", Reply(302, headers={"location": server.url("/to-private")}))
        server.route("/to-private", Reply(307, headers={"location": neighbour.url("/secret")}))
        with guarded_client(["127.0.0.1"], timeout=TIMEOUT, follow_redirects=True, max_redirects=5) as client:
            with pytest.raises(AddressRefused, match="127.0.0.2"):
                client.get(server.url("/hop"))
        assert len(server.hits_on("/to-private")) == 1 and neighbour.hits == []
    finally:
        neighbour.stop()


def test_the_checked_address_is_the_one_connected_to(server: ScriptedServer) -> None:
    """'pinned.test' exists only in the test's resolver: reaching the server proves the connection
    used the address the guard checked, with the original name in the Host header."""
    calls: list[str] = []

    def counting_resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return fake_resolve(host, port)

    server.route("/who", Reply(200, b"me"))
    url = server.url("/who").replace("127.0.0.1", "pinned.test")
    with guarded_client(["127.0.0.1"], timeout=TIMEOUT, follow_redirects=False, resolve=counting_resolve) as client:
        assert client.get(url).content == b"me"
    assert calls == ["pinned.test"]
    assert server.hits_on("/who")[0].headers["host"] == f"pinned.test:{server.port}"


def test_tls_still_verifies_the_host_name(certificate: Certificate) -> None:
    """The connection goes to an IP, but SNI and the certificate check use the URL's name."""
    server = ScriptedServer(tls=certificate).start()
    try:
        server.route("/tls", Reply(200, b"secure"))
        policy = AddressPolicy.from_allow_list(["127.0.0.1"], fake_resolve)
        transport = GuardedTransport(policy, verify=ssl.create_default_context(cafile=str(certificate.cert)))
        good = server.url("/tls").replace("127.0.0.1", "localhost")
        with httpx.Client(transport=transport, timeout=TIMEOUT) as client:
            assert client.get(good).content == b"secure"
            with pytest.raises(httpx.ConnectError, match="certificate|hostname"):
                client.get(server.url("/tls").replace("127.0.0.1", "pinned.test"))
    finally:
        server.stop()
