"""HttpClient against a real local HTTP server: retries, Retry-After, timeouts, truncation, cache."""

from __future__ import annotations

import json
import socket
import time
import tracemalloc

import pytest
from fixture_server import FixtureServer, Reply

from phenogen.data.http import HttpClient, HttpStatusError, ResponseTooLarge
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


# ------------------------------------------------------------ misbehaving servers (issue 22)
def test_slow_drip_body_fails_at_the_deadline(server, tmp_path):
    """A body trickling 1 byte per 0.2 s (1,000 bytes = 200 s) fails at timeout_s=1, not after 200 s."""
    server.add("/drip", Reply(200, b"x" * 1000, drip_s=0.2))
    c = client(tmp_path, timeout_s=1.0, retries=0)
    t0 = time.monotonic()
    with pytest.raises(
        NetworkError, match=r"/drip: gave up after 1 attempt\(s\), last: no complete answer within the 1-s"
    ):
        c.get(server.base + "/drip")
    elapsed = time.monotonic() - t0
    print(f"\nnumbers: slow drip (1 byte / 0.2 s), timeout_s=1, retries=0: failed after {elapsed:.2f} s")
    assert elapsed < 3.0
    assert c.cached(server.base + "/drip") is None


def test_slow_drip_headers_fail_at_the_deadline_and_each_retry_gets_one(server, tmp_path):
    """Status line and headers dripped byte by byte: each attempt ends at its deadline (2 attempts ≈ 2 s)."""
    server.add("/drip", Reply(200, b"late", drip_s=0.2, drip_headers=True))
    c = client(tmp_path, timeout_s=1.0, retries=1)
    t0 = time.monotonic()
    with pytest.raises(NetworkError, match="deadline"):
        c.get(server.base + "/drip")
    elapsed = time.monotonic() - t0
    print(f"\nnumbers: dripped headers, timeout_s=1, retries=1: failed after {elapsed:.2f} s")
    assert elapsed < 4.0
    assert server.count("/drip") == 2 and c.stats.retries == 1


def test_a_fast_answer_is_unaffected_by_the_deadline_watchdog(server, tmp_path):
    """Many quick requests in a row: the per-attempt watchdog neither fires nor leaks sockets."""
    server.add("/a", OK)
    c = client(tmp_path, timeout_s=1.0)
    for i in range(30):
        assert c.get(f"{server.base}/a?i={i}", use_cache=False) == OK.body
    assert c.stats.retries == 0


@pytest.mark.parametrize(
    "length, what",
    [
        ("auto", "Content-Length announces 300,000,000 bytes"),
        (None, "body passed the cap while streaming"),
        (10**12, "Content-Length announces 1,000,000,000,000"),
    ],
)
def test_huge_body_stops_at_the_cap_with_bounded_memory(server, tmp_path, length, what):
    """300 MB announced (truly, falsely, or not at all): refused at a 1 MiB cap, not retried, memory bounded."""
    size = 300_000_000 if length != 10**12 else 1000
    server.add("/big", Reply(200, size=size, content_length=length))
    c = client(tmp_path, max_bytes=2**20)
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(
            ResponseTooLarge, match=rf"GET {server.base}/big: {what}.*; the cap is 1,048,576 bytes"
        ):
            c.get(server.base + "/big")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - t0
    print(
        f"\nnumbers: {size:,}-byte body, Content-Length {length}, cap 1 MiB: refused after {elapsed:.2f} s, "
        f"{c.stats.bytes_received:,} body bytes read, tracemalloc peak {peak / 2**20:.2f} MiB"
    )
    assert elapsed < 5.0
    assert peak < 4 * 2**20, peak  # at most the cap (+ one chunk and bookkeeping), not 300 MB
    assert c.stats.bytes_received <= 2**20 + 65536
    assert server.count("/big") == 1 and c.cached(server.base + "/big") is None


def test_content_length_smaller_than_the_stream_reads_only_what_it_announces(server, tmp_path):
    """A Content-Length of 10 on an endless stream: the client reads 10 bytes and stops."""
    server.add("/lie", Reply(200, size=50_000_000, content_length=10))
    c = client(tmp_path)
    assert c.get(server.base + "/lie") == b"x" * 10
    assert c.stats.bytes_received == 10


def test_per_call_cap_overrides_the_client_cap(server, tmp_path):
    server.add("/a", Reply(200, b"y" * 5000))
    c = client(tmp_path, max_bytes=1000)
    with pytest.raises(ResponseTooLarge):
        c.get(server.base + "/a")
    assert c.get(server.base + "/a", max_bytes=10_000) == b"y" * 5000


@pytest.mark.parametrize(
    "bad",
    [
        Reply(200, b"0123456789" * 10, reset_after=30),  # TCP reset mid-body
        Reply(200, b"0123456789" * 10, chunked=True, bad_chunk=True),  # chunk size 'zz'
        Reply(200, b"0123456789" * 10, chunked=True, truncate_to=40),  # chunked, cut before the last chunk
        Reply(raw=b"SSH-2.0-OpenSSH_9.6\r\n"),  # not HTTP at all
        Reply(raw=b""),  # closed without a word
        Reply(200, b"0123456789" * 10, content_length="abc", truncate_to=0),  # nonsense length, no body
    ],
    ids=["reset", "bad-chunk", "cut-chunked", "not-http", "silent-close", "bad-length"],
)
def test_broken_transfers_are_retried_then_succeed(server, tmp_path, bad):
    """Resets, broken chunked encoding, non-HTTP answers: retried, and the good answer after them wins."""
    server.add("/t", bad, Reply(200, b"0123456789" * 10))
    c = client(tmp_path)
    assert c.get(server.base + "/t", validate=lambda b: len(b) == 100 or int("cut")) == b"0123456789" * 10
    assert c.stats.retries == 1 and server.count("/t") == 2


def test_broken_transfers_end_in_one_network_error_line(server, tmp_path):
    server.add("/t", Reply(200, b"0123456789" * 10, chunked=True, bad_chunk=True))
    c = client(tmp_path, retries=1)
    with pytest.raises(NetworkError) as info:
        c.get(server.base + "/t")
    message = str(info.value)
    assert "\n" not in message and f"GET {server.base}/t: gave up after 2 attempt(s)" in message


def test_valid_chunked_body_is_read_whole(server, tmp_path):
    server.add("/c", Reply(200, size=300_000, chunked=True))
    assert client(tmp_path).get(server.base + "/c") == b"x" * 300_000


def test_redirects_are_followed_but_loops_and_other_schemes_are_final(server, tmp_path):
    """One redirect is followed; a loop, a long chain and a file:// target end at once in HttpStatusError."""
    server.add("/a", OK)
    server.add("/moved", Reply(302, headers={"Location": "/a"}))
    server.add("/loop", Reply(302, headers={"Location": "/loop"}))
    for i in range(8):
        server.add(f"/chain{i}", Reply(301, headers={"Location": f"/chain{i + 1}"}))
    server.add("/evil", Reply(302, headers={"Location": "file:///etc/passwd"}))
    server.add("/heavy", Reply(302, size=300_000_000, headers={"Location": "/a"}))  # its body is never read
    c = client(tmp_path)
    assert c.get_json(server.base + "/moved") == {"results": [1, 2]}
    t0 = time.monotonic()
    assert c.get_json(server.base + "/heavy") == {"results": [1, 2]}
    assert time.monotonic() - t0 < 2.0
    for path, match in (("/loop", "redirect loop"), ("/chain0", "redirect loop"), ("/evil", "not an http")):
        with pytest.raises(HttpStatusError, match=match) as info:
            c.get(server.base + path)
        assert 300 <= info.value.status < 400 and "\n" not in str(info.value)
    assert c.stats.retries == 0 and server.count("/chain7") == 0


def test_only_http_urls_are_fetched(tmp_path):
    with pytest.raises(NetworkError, match="not an http"):
        client(tmp_path).get("file:///etc/passwd")


def test_wrong_shape_is_refused_at_once_and_never_cached(server, tmp_path):
    """A validator's DataError (valid JSON, wrong shape) is raised at once: no retry, nothing cached."""
    from phenogen.errors import DataError

    def shape(body: bytes) -> None:
        if not isinstance(json.loads(body).get("results"), list):
            raise DataError("test source: field 'results' is not a list")

    server.add("/s", Reply(200, b'{"results": {"a": 1}}'))
    c = client(tmp_path)
    with pytest.raises(
        DataError, match=rf"field 'results' is not a list \[GET {server.base}/s; not cached\]"
    ):
        c.get(server.base + "/s", validate=shape)
    assert server.count("/s") == 1 and c.cached(server.base + "/s") is None


def test_persistently_malformed_answer_is_a_data_error(server, tmp_path):
    """JSON that never parses is retried, then raised as DataError (the transfers worked, the payload did not)."""
    from phenogen.errors import DataError

    server.add("/j", Reply(200, b"<html>oops</html>"))
    c = client(tmp_path, retries=1)
    with pytest.raises(DataError, match="gave up after 2 attempt.*not valid JSON"):
        c.get_json(server.base + "/j")
    assert c.cached(server.base + "/j") is None


def test_cached_answer_that_no_longer_parses_is_fetched_again(server, tmp_path):
    """A cache entry written by a laxer version is replaced by a fresh, valid answer."""
    server.add("/a", Reply(200, b'{"results": "old"}'), OK)
    c = client(tmp_path)
    url = server.base + "/a"
    c.get(url)  # cached without validation

    def parse(body: bytes) -> list:
        from phenogen.errors import DataError

        doc = json.loads(body)
        if not isinstance(doc["results"], list):
            raise DataError("results is not a list")
        return doc["results"]

    assert c.get_parsed(url, parse) == [1, 2]
    assert json.loads(c.cached(url)) == {"results": [1, 2]}
