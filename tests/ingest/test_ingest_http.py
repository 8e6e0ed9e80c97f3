"""HTTP fetching against a real local server: special routes, retries, redirects, policy and rate limits."""
from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import pytest

from tests.support.httpserver import TestHTTPServer
from visiondb.errors import AccessDeniedError, FetchError
from visiondb.ingest import Fetcher, FetchPolicy, looks_like_image

LOCAL = ["127.0.0.1"]


def fetcher(**kw) -> Fetcher:
    kw.setdefault("allow_fetch", LOCAL)
    kw.setdefault("block_private", True)
    kw.setdefault("backoff", 0.02)
    kw.setdefault("timeout", 5.0)
    return Fetcher(FetchPolicy(**kw))


def test_served_file_and_redirect(server: TestHTTPServer, www: Path) -> None:
    with fetcher() as f:
        assert f.read(server.url("img/0.jpg")) == (www / "img/0.jpg").read_bytes()
        assert f.read_image(server.url("redirect/img/1.jpg")) == (www / "img/1.jpg").read_bytes()
    assert server.hits["/redirect/img/1.jpg"] == 1 and server.hits["/img/1.jpg"] == 1


def test_404_is_not_retried(server: TestHTTPServer) -> None:
    server.reset()
    with fetcher(retries=3) as f, pytest.raises(FetchError) as ei:
        f.read(server.url("missing.jpg"))
    assert ei.value.status == 404
    assert "HTTP 404 Not Found" in str(ei.value) and "/missing.jpg" in str(ei.value)
    assert server.hits["/missing.jpg"] == 1


def test_500_then_200_is_retried(server: TestHTTPServer) -> None:
    server.reset()
    with fetcher(retries=2) as f:
        data = f.read_image(server.url("flaky.jpg"))
    assert looks_like_image(data, "image/jpeg") == "JPEG"
    assert server.hits["/flaky.jpg"] == 2


def test_5xx_gives_up_after_retries(server: TestHTTPServer) -> None:
    server.reset()
    with fetcher(retries=2) as f, pytest.raises(FetchError) as ei:
        f.read(server.url("status/503"))
    assert ei.value.status == 503 and "after 3 attempts" in str(ei.value)
    assert server.hits["/status/503"] == 3


def test_slow_times_out(server: TestHTTPServer) -> None:
    start = time.monotonic()
    with fetcher(timeout=1.0, retries=0) as f, pytest.raises(FetchError) as ei:
        f.read(server.url("slow.jpg"))
    assert "timed out after 1.0 s" in str(ei.value) and "slow.jpg" in str(ei.value)
    assert time.monotonic() - start < 2.9


def test_redirect_loop(server: TestHTTPServer) -> None:
    server.reset()
    with fetcher(max_redirects=5) as f, pytest.raises(FetchError) as ei:
        f.read(server.url("loop/a"))
    assert "too many redirects (5)" in str(ei.value)
    assert server.hits["/loop/a"] + server.hits["/loop/b"] == 6


def test_html_page_is_not_an_image(server: TestHTTPServer) -> None:
    with fetcher() as f:
        with pytest.raises(FetchError, match="not an image: Content-Type text/html"):
            f.read_image(server.url("page.jpg"))
        assert f.read(server.url("page.jpg")).startswith(b"<!doctype html>")


def test_truncated_jpeg_is_fetched_as_bytes(server: TestHTTPServer) -> None:
    with fetcher() as f:
        data = f.read_image(server.url("truncated.jpg"))
    assert len(data) == len(server.jpeg) // 2
    assert looks_like_image(data, None) == "JPEG"


def test_size_limit(server: TestHTTPServer, www: Path) -> None:
    with fetcher(max_bytes=100) as f, pytest.raises(FetchError, match="response larger than 100 bytes"):
        f.read(server.url("img/0.jpg"))


def test_private_address_refused_before_connecting() -> None:
    start = time.monotonic()
    with Fetcher(FetchPolicy(block_private=True, timeout=10.0, retries=3)) as f:
        with pytest.raises(AccessDeniedError) as ei:
            f.read("http://10.0.0.1/x.jpg")
    assert time.monotonic() - start < 1.0  # no connection attempt (it would hang for the 10 s timeout)
    assert "10.0.0.1" in str(ei.value) and ei.value.uri == "http://10.0.0.1/x.jpg"
    for url in ("http://169.254.169.254/latest/meta-data", "http://[::1]/x", "http://192.168.1.1/x"):
        with Fetcher(FetchPolicy(block_private=True)) as f, pytest.raises(AccessDeniedError):
            f.read(url)


def test_loopback_needs_allow_fetch(server: TestHTTPServer) -> None:
    server.reset()
    with Fetcher(FetchPolicy(block_private=True)) as f, pytest.raises(AccessDeniedError, match="127.0.0.1"):
        f.read(server.url("img/0.jpg"))
    assert server.hits["/img/0.jpg"] == 0
    with Fetcher(FetchPolicy(block_private=True, allow_fetch=["127.0.0.0/8"])) as f:
        assert f.read(server.url("img/0.jpg"))
    with Fetcher(FetchPolicy()) as f:  # embedded default: no address blocking
        assert f.read(server.url("img/0.jpg"))


def test_connections_go_only_to_checked_addresses(server: TestHTTPServer) -> None:
    """The address check runs when a connection opens, on the addresses it then uses: a host name that resolves
    to loopback is refused with the URL named and nothing sent; allowed, the same name is fetched."""
    server.reset()
    url = server.url("img/0.jpg").replace("127.0.0.1", "localhost")
    with Fetcher(FetchPolicy(block_private=True, retries=2, backoff=0.01)) as f:
        with pytest.raises(AccessDeniedError, match="non-public address") as ei:
            f.read(url)
    assert ei.value.uri == url and "localhost" in str(ei.value) and url in str(ei.value)
    assert server.hits["/img/0.jpg"] == 0
    with Fetcher(FetchPolicy(block_private=True, allow_fetch=["127.0.0.0/8", "::1"])) as f:
        assert looks_like_image(f.read(url), None) == "JPEG"
    assert server.hits["/img/0.jpg"] == 1


def test_every_redirect_hop_is_checked(server: TestHTTPServer) -> None:
    with fetcher() as f, pytest.raises(AccessDeniedError, match="10.0.0.1"):
        f.read(server.url("goto?http://10.0.0.1/secret"))


def test_rate_limit_per_host(server: TestHTTPServer) -> None:
    uris = [server.url(f"img/{i % 3}.jpg") for i in range(10)]
    with fetcher(rate_per_host=5.0) as f:
        start = time.monotonic()
        results = list(f.read_many(uris, concurrency=4))
        elapsed = time.monotonic() - start
    assert sorted(i for i, _ in results) == list(range(10))
    assert all(isinstance(r, bytes) for _, r in results)
    assert elapsed >= 1.75


def test_read_many_reports_errors_in_place(server: TestHTTPServer, www: Path) -> None:
    uris = [server.url("img/0.jpg"), server.url("missing.jpg"), server.url("page.jpg"), str(www / "img/2.jpg")]
    with fetcher(retries=0) as f:
        got = dict(f.read_many(uris, images=True, progress=False))
    assert got[0] == (www / "img/0.jpg").read_bytes() and got[3] == (www / "img/2.jpg").read_bytes()
    assert isinstance(got[1], FetchError) and got[1].status == 404
    assert isinstance(got[2], FetchError) and "not an image" in str(got[2])


@pytest.mark.parametrize("code", [300, 304, 305, 306])
def test_3xx_that_is_not_a_followed_redirect_is_an_error(server: TestHTTPServer, code: int) -> None:
    server.reset()
    url = server.url(f"status/{code}")
    with fetcher(retries=2) as f, pytest.raises(FetchError) as ei:
        f.read(url)
    assert ei.value.status == code and ei.value.uri == url
    assert f"HTTP {code}" in str(ei.value) and url in str(ei.value)
    assert server.hits[f"/status/{code}"] == 1  # not retried
    with fetcher() as f:
        (_, got), = list(f.read_many([url]))
    assert isinstance(got, FetchError) and got.status == code  # a row error, not an empty body


@pytest.mark.parametrize("address", [
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254 (cloud metadata)
    "2002:c0a8:101::",  # 6to4 of 192.168.1.1
    "2002:a00:1::",  # 6to4 of 10.0.0.1
    "2001:0:7f00:1::",  # Teredo with server 127.0.0.1
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo with client 10.0.0.1
])
def test_private_ipv4_inside_6to4_and_teredo_is_refused(address: str) -> None:
    assert not FetchPolicy(block_private=True).address_allowed(ipaddress.ip_address(address))


def test_6to4_of_a_public_address_is_allowed() -> None:
    policy = FetchPolicy(block_private=True)
    assert policy.address_allowed(ipaddress.ip_address("2002:808:808::1"))  # 6to4 of 8.8.8.8
    listed = FetchPolicy(block_private=True, allow_fetch=["2002::/16"])  # listing the network is the user's choice
    assert listed.address_allowed(ipaddress.ip_address("2002:a00:1::"))
