"""HttpClient against a real local HTTP server: retries, Retry-After, timeouts, truncation, cache."""

from __future__ import annotations

import json
import socket

import pytest
from fixture_server import FixtureServer, Reply

from phenogen.data.http import HttpClient, HttpStatusError
from phenogen.errors import NetworkError

OK = Reply(200, b'{"results": [1, 2]}', {"Content-Type": "application/json"})


@pytest.fixture
def server():
    with FixtureServer() as srv:
        yield srv


def client(tmp_path, waits: list[float] | None = None, **kwargs) -> HttpClient:
    waits = [] if waits is None else waits
    # a generous timeout: a busy CI machine can take tenths of a second to schedule the server thread,
    # and a spurious timeout would add a retry the test does not expect (only the timeout test sets less)
    opts = {"timeout_s": 5.0, "retries": 3, "backoff_s": 0.01, "backoff_max_s": 5.0}
    return HttpClient(tmp_path / "cache", sleep=waits.append, **{**opts, **kwargs})


def test_get_caches_and_second_call_makes_no_request(server, tmp_path):
    """A completed answer is cached; asking again sends nothing."""
    server.add("/a", OK)
    c = client(tmp_path)
    url = server.base + "/a?x=1"
    assert c.get_json(url) == {"results": [1, 2]}
    assert c.get_json(url) == {"results": [1, 2]}
    assert server.count("/a") == 1
    assert (c.stats.requests, c.stats.cache_hits) == (1, 1)
    assert not list((tmp_path / "cache").rglob(".tmp-*"))


def test_500_then_success_retries_with_backoff(server, tmp_path):
    """Two 5xx answers are retried with doubling waits, then the 200 is returned."""
    server.add("/a", Reply(500, b"oops"), Reply(503, b"busy"), OK)
    waits: list[float] = []
    c = client(tmp_path, waits)
    assert c.get_json(server.base + "/a") == {"results": [1, 2]}
    assert server.count("/a") == 3
    assert waits == [0.01, 0.02]


def test_429_honours_retry_after(server, tmp_path):
    """A 429 with Retry-After: 2 waits exactly 2 s (not the computed backoff)."""
    server.add("/a", Reply(429, b"slow down", {"Retry-After": "2"}), OK)
    waits: list[float] = []
    assert client(tmp_path, waits).get(server.base + "/a") == OK.body
    assert waits == [2.0]


def test_timeout_is_retried(server, tmp_path):
    """An answer slower than timeout_s is abandoned and asked again."""
    server.add("/slow", Reply(200, b"late", delay=2.0), Reply(200, b"fast"))
    c = client(tmp_path, timeout_s=0.5)
    assert c.get(server.base + "/slow") == b"fast"
    assert c.stats.retries == 1


def test_truncated_body_is_detected_and_retried(server, tmp_path):
    """Fewer bytes than Content-Length announces count as a failure; the retry gets the whole body."""
    server.add("/t", Reply(200, b"0123456789" * 10, truncate_to=25), Reply(200, b"0123456789" * 10))
    c = client(tmp_path)
    assert c.get(server.base + "/t") == b"0123456789" * 10
    assert c.stats.retries == 1


def test_malformed_json_is_retried_and_never_cached(server, tmp_path):
    """A body the validator rejects (cut JSON) is retried; only the valid one lands in the cache."""
    server.add("/j", Reply(200, b'{"results": [1,'), OK)
    c = client(tmp_path)
    url = server.base + "/j"
    assert c.get_json(url) == {"results": [1, 2]}
    assert json.loads(c.cached(url)) == {"results": [1, 2]}


def test_gives_up_with_network_error_and_caches_nothing(server, tmp_path):
    """Persistent 502s end in NetworkError naming the URL and the attempts; nothing is cached."""
    server.add("/down", Reply(502, b"bad gateway"))
    c = client(tmp_path, retries=2)
    url = server.base + "/down?api_key=SECRET123"
    with pytest.raises(NetworkError, match=r"gave up after 3 attempt\(s\), last: HTTP 502") as info:
        c.get(url)
    assert "SECRET123" not in str(info.value)
    assert server.count("/down") == 3
    assert c.cached(url) is None


def test_404_is_not_retried(server, tmp_path):
    """A 404 is final: one request, HttpStatusError with the status."""
    c = client(tmp_path)
    with pytest.raises(HttpStatusError) as info:
        c.get(server.base + "/missing")
    assert info.value.status == 404
    assert server.count("/missing") == 1


def test_connection_refused_becomes_network_error(tmp_path):
    """Nothing listening on the port: retried, then NetworkError."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = client(tmp_path, retries=1)
    with pytest.raises(NetworkError, match="connection failed"):
        c.get(f"http://127.0.0.1:{port}/x")
    assert c.stats.requests == 2


def test_cache_key_ignores_secrets_and_parameter_order(tmp_path):
    """The same request with another API key or parameter order hits the same cache entry."""
    c = client(tmp_path)
    assert c.cache_key("http://h/p?a=1&b=2&api_key=X") == c.cache_key("http://h/p?b=2&a=1&api_key=Y")
    assert c.cache_key("http://h/p?a=1") != c.cache_key("http://h/p?a=2")


def test_rate_limit_spaces_requests(server, tmp_path):
    """At 20 requests/s, 4 back-to-back requests wait about 3 × 50 ms in total."""
    server.add("/r", OK)
    waits: list[float] = []
    c = client(tmp_path, waits)
    c.set_rate(server.base, 20.0)
    for i in range(4):
        c.get(f"{server.base}/r?i={i}")
    assert len(waits) == 3
    assert 0.1 < sum(waits) <= 0.15 + 1e-9
