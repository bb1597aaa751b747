"""One careful HTTP client for every remote source: deadlines, size caps, retries, rate limits, a disk cache.

Every fetcher (NCBI, BOLD, iNaturalist, GBIF, image downloads) goes through :class:`HttpClient`:

* **a wall-clock deadline per attempt** (``timeout_s`` covers connect, TLS, headers and the whole
  body, redirects included): a watchdog shuts the socket when it passes, so a server trickling one
  byte a second cannot hold a request for longer than ``timeout_s``;
* **a cap on the body size** (``max_bytes``, per client and per call): a ``Content-Length`` above it is
  refused before any body byte is read, and a body without one is counted while it streams and
  abandoned as soon as it passes the cap — never more than the cap is held in memory
  (:class:`ResponseTooLarge`, not retried);
* **retries with exponential backoff** on timeouts, dropped connections, broken chunked encoding,
  HTTP 429 and 5xx; a ``Retry-After`` header (seconds or an HTTP date) wins over the computed wait;
* **truncated bodies are detected** (fewer bytes than ``Content-Length``, or a body the caller's
  ``validate`` function cannot parse — e.g. JSON cut short) and retried like a timeout;
* **well-formed but wrong payloads are refused at once**: a ``validate`` that raises
  :class:`~phenogen.errors.DataError` (valid JSON of the wrong shape) is not retried and not cached;
* **rate limiting** per host (NCBI: at most 3 requests/s, 10 with an API key);
* **an on-disk cache keyed by the request** (method + URL with sorted parameters, secrets left out):
  a body is written atomically (temporary file, then ``os.replace``) only after it validated, so a
  run killed at any moment leaves either a complete entry or none, and a rerun fetches only what is
  missing;
* redirects are followed (http/https only, at most :data:`MAX_REDIRECTS`; a loop is a final error);
  other 4xx answers and retries running out raise :class:`~phenogen.errors.NetworkError` naming the
  URL (with secrets redacted), the status and what to do.

The payload helpers :func:`json_payload`, :func:`expect` and :class:`RetryablePayloadError` are shared
by the sources' pure ``parse_*`` functions.

>>> client = HttpClient(cache_dir=None)
>>> client.url("https://example.org/api/", "search", {"b": 2, "a": "x y"})
'https://example.org/api/search?a=x+y&b=2'
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import io
import json
import logging
import math
import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from phenogen.errors import DataError, NetworkError, PhenogenError, one_line

__all__ = [
    "HttpClient",
    "HttpStats",
    "HttpStatusError",
    "ResponseTooLarge",
    "RetryablePayloadError",
    "SECRET_PARAMS",
    "RETRY_STATUSES",
    "DEFAULT_MAX_BYTES",
    "IMAGE_MAX_BYTES",
    "MAX_REDIRECTS",
    "json_payload",
    "expect",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

SECRET_PARAMS: frozenset[str] = frozenset({"api_key", "key", "token", "apikey"})
RETRY_STATUSES: frozenset[int] = frozenset({408, 425, 429, 500, 502, 503, 504})
DEFAULT_MAX_BYTES = 64 * 2**20  # JSON, GenBank text, TSV
IMAGE_MAX_BYTES = 128 * 2**20  # an "original" photo or a scanned plate
MAX_REDIRECTS = 5
_CHUNK = 64 * 2**10


class HttpStatusError(NetworkError):
    """The server answered with a final (not retried) error status such as 404; ``status`` holds it."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ResponseTooLarge(NetworkError):
    """The body is larger than the cap (announced or counted); not retried, since it would be again."""


class RetryablePayloadError(DataError):
    """A payload that may be fine on another try: cut short in transit, or a transient server message.

    Raised by ``parse_*`` functions for bodies that do not parse (truncated JSON, GenBank text without
    its final ``//``); :meth:`HttpClient.get` retries these, while a plain :class:`DataError` (a
    complete answer of the wrong shape) is raised at once.
    """


class _Retryable(Exception):
    """A failure worth another try; ``wait`` is the server's Retry-After, ``payload`` a bad body."""

    def __init__(self, reason: str, wait: float | None = None, payload: bool = False) -> None:
        super().__init__(reason)
        self.wait = wait
        self.payload = payload


@dataclass
class HttpStats:
    """What the client did: network requests sent, cache hits, retries, seconds slept, body bytes received."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    slept_s: float = 0.0
    bytes_received: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


# ---------------------------------------------------------------- payload helpers (for parse_* functions)
def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


def json_payload(payload: bytes | str, source: str) -> Any:
    """The parsed JSON of ``payload``; a body that does not parse raises :class:`RetryablePayloadError`.

    >>> json_payload(b'{"a": 1}', "test")
    {'a': 1}
    """
    try:
        return json.loads(payload)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, too deep
        head = bytes(payload[:60]) if isinstance(payload, bytes | bytearray) else payload[:60].encode()
        raise RetryablePayloadError(
            f"{source}: answer is not valid JSON ({type(exc).__name__}: {one_line(exc, 120)}); starts {head!r}"
        ) from None


def expect(
    value: object, kinds: type | tuple[type, ...], source: str, where: str, optional: bool = False
) -> Any:
    """``value`` if it is of ``kinds`` (``None`` too when ``optional``), else :class:`DataError` naming ``where``.

    Booleans never pass as numbers.

    >>> expect([1], list, "GBIF", "results")
    [1]
    >>> expect({"a": 1}, list, "GBIF", "results")
    Traceback (most recent call last):
    ...
    phenogen.errors.DataError: GBIF: field 'results' is an object, expected a list
    """
    if value is None and optional:
        return None
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
        return value
    wanted = " or ".join(_kind(k()) if k is not type(None) else "null" for k in kinds)
    raise DataError(f"{source}: field {where!r} is {_kind(value)}, expected {wanted}")


# ---------------------------------------------------------------- transport
def _scheme(url: str) -> str:
    try:
        return urllib.parse.urlsplit(url).scheme
    except ValueError:  # e.g. "http://[broken" (an invalid IPv6 host)
        return ""


def _redact(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0][:200] + ("?…" if "?" in url else "")
    query = [(k, "***" if k.lower() in SECRET_PARAMS else v) for k, v in urllib.parse.parse_qsl(parts.query)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _content_length(value: str | None) -> int | None:
    """The declared body length, or ``None`` when absent or not one non-negative integer."""
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


class _DeadlineExceeded(Exception):
    pass


class _Deadline:
    """The wall-clock end of one attempt; a watchdog thread shuts its sockets when it passes.

    Socket timeouts only bound each read, so a server sending a byte now and then would hold a request
    forever; shutting the socket from the watchdog makes the blocked read return at the deadline.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0 or self.expired:
            self.expired = True
            raise _DeadlineExceeded
        return left

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` at the deadline (through a duplicate, which TLS wrapping leaves usable)."""
        dup = sock.dup()
        with self._lock:
            self._socks.append(dup)
            if self.expired:
                self._shut(dup)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._socks:
                self._shut(sock)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._socks:
                sock.close()
            self._socks.clear()


def _connection(base: type[http.client.HTTPConnection], deadline: _Deadline) -> Callable[..., Any]:
    """An ``http.client`` connection factory whose sockets time out with ``deadline``."""

    def make(*args: Any, **kwargs: Any) -> http.client.HTTPConnection:
        conn = base(*args, **kwargs)
        create = conn._create_connection  # type: ignore[attr-defined]

        def create_watched(address: Any, timeout: Any = None, source_address: Any = None) -> socket.socket:
            sock = create(address, deadline.remaining(), source_address)
            deadline.watch(sock)
            return sock

        conn._create_connection = create_watched  # type: ignore[attr-defined]
        return conn

    return make


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_connection(http.client.HTTPConnection, self._deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_connection(http.client.HTTPSConnection, self._deadline), req)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows at most :data:`MAX_REDIRECTS` redirects, to http(s) URLs only."""

    max_redirections = MAX_REDIRECTS

    def http_error_302(self, req, fp, code, msg, headers):  # noqa: ANN001, ANN201
        location = headers.get("location") or headers.get("uri")
        if location:
            newurl = urllib.parse.urljoin(req.full_url, location.strip())
            if _scheme(newurl) not in ("http", "https"):
                fp.close()
                raise HttpStatusError(
                    f"GET {_redact(req.full_url)}: HTTP {code} redirects to {_redact(newurl)[:200]!r}, "
                    "which is not an http(s) URL; not followed",
                    code,
                )
        fp.close()  # urllib would read the redirect's body whole: unbounded, and never needed
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class HttpClient:
    """GET with a deadline, a size cap, retries, per-host rate limits and a resumable on-disk cache.

    Parameters
    ----------
    cache_dir
        Directory of the response cache; ``None`` disables caching.
    timeout_s
        Wall-clock seconds one attempt may take in all: connect, headers and the whole body.
    retries
        Further attempts after the first one fails transiently.
    backoff_s, backoff_max_s
        First wait between attempts (doubled each time) and the cap of one wait.
    user_agent
        ``User-Agent`` header sent with every request.
    max_bytes
        Largest body accepted (``get(max_bytes=…)`` overrides it per request).
    sleep, clock
        Injected ``time.sleep`` / ``time.monotonic`` for the retry and rate-limit waits (tests may
        record them); the deadline always uses the real clock.

    Examples
    --------
    >>> HttpClient(cache_dir=None, retries=0).stats.requests
    0
    """

    def __init__(
        self,
        cache_dir: str | Path | None,
        *,
        timeout_s: float = 30.0,
        retries: int = 5,
        backoff_s: float = 1.0,
        backoff_max_s: float = 60.0,
        user_agent: str = "phenogen/0.1",
        max_bytes: int = DEFAULT_MAX_BYTES,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(timeout_s) and timeout_s > 0) or max_bytes < 1:
            raise ValueError(f"need timeout_s > 0 and max_bytes >= 1, got {timeout_s}, {max_bytes}")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.user_agent = user_agent
        self.max_bytes = max_bytes
        self._sleep = sleep
        self._clock = clock
        self._rates: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self.stats = HttpStats()

    # ------------------------------------------------------------ helpers
    @staticmethod
    def url(base: str, path: str = "", params: Mapping[str, Any] | None = None) -> str:
        """``base`` joined with ``path`` plus the URL-encoded, key-sorted ``params``."""
        full = base if not path else base.rstrip("/") + "/" + path.lstrip("/")
        if params:
            query = urllib.parse.urlencode(
                sorted((k, str(v)) for k, v in params.items() if v not in (None, ""))
            )
            full += ("&" if "?" in full else "?") + query
        return full

    def set_rate(self, host_or_url: str, per_second: float) -> None:
        """At most ``per_second`` requests per second to this host (0 = unlimited)."""
        host = urllib.parse.urlsplit(host_or_url).netloc or host_or_url
        self._rates[host] = per_second

    def cache_key(self, url: str) -> str:
        """Stable key of a request: SHA-256 of the URL with secret parameters removed."""
        parts = urllib.parse.urlsplit(url)
        query = sorted(
            (k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k.lower() not in SECRET_PARAMS
        )
        canonical = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
        return hashlib.sha256(("GET " + canonical).encode()).hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.body"

    def cached(self, url: str) -> bytes | None:
        """The cached body of ``url``, or ``None``."""
        path = self._cache_path(self.cache_key(url))
        if path is not None and path.is_file():
            return path.read_bytes()
        return None

    def _store(self, url: str, body: bytes, content_type: str) -> None:
        key = self.cache_key(url)
        path = self._cache_path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"url": _redact(url), "bytes": len(body), "content_type": content_type, "fetched": time.time()}
        for target, data in ((path.with_suffix(".json"), json.dumps(meta).encode()), (path, body)):
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, target)  # atomic: a killed run leaves a whole entry or none
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    def _throttle(self, url: str) -> None:
        host = urllib.parse.urlsplit(url).netloc
        rate = self._rates.get(host, 0.0)
        if rate <= 0:
            return
        gap = 1.0 / rate - (self._clock() - self._last.get(host, -1e18))
        if gap > 0:
            self._sleep(gap)
            self.stats.slept_s += gap
        self._last[host] = self._clock()

    def _too_large(self, url: str, cap: int, what: str) -> ResponseTooLarge:
        return ResponseTooLarge(
            f"GET {_redact(url)}: {what}; the cap is {cap:,} bytes, so this is not the answer asked for "
            "(raise max_bytes if it is); not retried"
        )

    def _read_body(
        self, response: http.client.HTTPResponse, url: str, cap: int, deadline: _Deadline
    ) -> bytes:
        """The body, streamed in chunks: refused once past ``cap``, checked against ``Content-Length``."""
        declared = _content_length(response.headers.get("Content-Length"))
        if declared is not None and declared > cap:
            raise self._too_large(url, cap, f"Content-Length announces {declared:,} bytes")
        out = io.BytesIO()  # getvalue() hands over its buffer without a copy
        chunk = bytearray(_CHUNK)
        view = memoryview(chunk)
        total = 0
        while True:
            deadline.remaining()
            n = response.readinto(chunk)
            if not n:
                break
            total += n
            self.stats.bytes_received += n
            if total > cap:
                raise self._too_large(url, cap, "body passed the cap while streaming (no Content-Length)")
            out.write(view[:n])
        if deadline.expired:  # the watchdog's shutdown reads as an end of file
            raise _DeadlineExceeded
        if declared is not None and total != declared:
            raise _Retryable(f"truncated body ({total} of {declared} bytes)")
        return out.getvalue()

    def _attempt(self, url: str, headers: Mapping[str, str], cap: int) -> tuple[bytes, str]:
        request = urllib.request.Request(url, headers={"User-Agent": self.user_agent, **headers})
        self._throttle(url)
        self.stats.requests += 1
        deadline = _Deadline(self.timeout_s)
        opener = urllib.request.build_opener(_HTTPHandler(deadline), _HTTPSHandler(deadline), _Redirects())
        try:
            with opener.open(request, timeout=self.timeout_s) as response:
                status = response.status
                content_type = response.headers.get("Content-Type", "")
                body = self._read_body(response, url, cap, deadline)
        except urllib.error.HTTPError as exc:
            exc.close()
            self.stats.statuses[exc.code] = self.stats.statuses.get(exc.code, 0) + 1
            if exc.code in RETRY_STATUSES:
                raise _Retryable(f"HTTP {exc.code}", _retry_after(exc.headers.get("Retry-After"))) from exc
            if 300 <= exc.code < 400:
                raise HttpStatusError(
                    f"GET {_redact(url)}: HTTP {exc.code} redirect loop, more than {MAX_REDIRECTS} redirects "
                    "or no usable Location; check the base URL",
                    exc.code,
                ) from exc
            raise HttpStatusError(
                f"GET {_redact(url)}: HTTP {exc.code} {one_line(exc.reason, 100)}; check the base URL and the "
                "query (this status is not retried)",
                exc.code,
            ) from exc
        except (_Retryable, PhenogenError):
            raise
        except _DeadlineExceeded as exc:
            raise _Retryable(f"no complete answer within the {self.timeout_s:g}-s deadline") from exc
        except http.client.InvalidURL as exc:
            raise NetworkError(f"GET {_redact(url)}: invalid URL ({exc})") from exc
        except urllib.error.URLError as exc:
            if deadline.expired:
                raise _Retryable(f"no complete answer within the {self.timeout_s:g}-s deadline") from exc
            if isinstance(exc.reason, OSError):  # refused, reset, DNS failure, timeout
                raise _Retryable(f"connection failed ({one_line(exc.reason)})") from exc
            raise NetworkError(f"GET {_redact(url)}: {one_line(exc.reason)}") from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:  # reset, timeout, bad chunking
            if deadline.expired:
                raise _Retryable(f"no complete answer within the {self.timeout_s:g}-s deadline") from exc
            raise _Retryable(f"{type(exc).__name__}: {one_line(exc)}") from exc
        finally:
            deadline.close()
        self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
        return body, content_type

    # ------------------------------------------------------------ public API
    def get(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        validate: Callable[[bytes], object] | None = None,
        use_cache: bool = True,
        refresh: bool = False,
        max_bytes: int | None = None,
    ) -> bytes:
        """Body of ``GET url``, from the cache when present, else fetched with retries and cached.

        ``validate(body)`` checks a body before it is returned or cached: a :class:`DataError` (a
        complete answer of the wrong shape) is raised at once; any other exception, and a
        :class:`RetryablePayloadError`, counts as a truncated transfer and is retried (when retries run
        out: ``DataError``). ``refresh=True`` ignores a cached answer and replaces it (e.g. a server token
        that expired). ``max_bytes`` overrides the client's cap on the body size.
        """
        if _scheme(url) not in ("http", "https"):
            raise NetworkError(f"GET {_redact(url)[:200]!r}: not an http(s) URL")
        if use_cache and not refresh:
            body = self.cached(url)
            if body is not None:
                self.stats.cache_hits += 1
                return body
        cap = self.max_bytes if max_bytes is None else max_bytes
        last, payload = "", False
        for attempt in range(self.retries + 1):
            try:
                body, content_type = self._attempt(url, headers or {}, cap)
                if validate is not None:
                    try:
                        validate(body)
                    except RetryablePayloadError as exc:
                        raise _Retryable(
                            f"malformed or truncated body ({one_line(exc, 1000)})", payload=True
                        ) from exc
                    except PhenogenError as exc:
                        raise DataError(f"{one_line(exc, 1000)} [GET {_redact(url)}; not cached]") from exc
                    except Exception as exc:  # noqa: BLE001 - any parse failure means a bad body
                        raise _Retryable(
                            f"malformed or truncated body ({type(exc).__name__}: {one_line(exc)})",
                            payload=True,
                        ) from exc
            except _Retryable as exc:
                last, payload = str(exc), exc.payload
                if attempt == self.retries:
                    break
                wait = min(self.backoff_max_s, self.backoff_s * 2**attempt)
                if exc.wait is not None:
                    wait = min(self.backoff_max_s, exc.wait)
                log.warning(
                    "GET %s: %s; retry %d/%d in %.1fs", _redact(url), last, attempt + 1, self.retries, wait
                )
                self.stats.retries += 1
                self.stats.slept_s += wait
                self._sleep(wait)
                continue
            if use_cache:
                self._store(url, body, content_type)
            return body
        message = f"GET {_redact(url)}: gave up after {self.retries + 1} attempt(s), last: {last}"
        if payload:  # the transfers worked, the answers did not parse: a bad payload, not a dead server
            raise DataError(message + "; nothing was cached")
        raise NetworkError(
            message
            + "; the service may be down or rate-limiting — rerun later (finished requests are cached)"
        )

    def get_parsed(self, url: str, parse: Callable[[bytes], T], **kwargs: Any) -> T:
        """``parse(get(url))``, parsing once: ``parse`` is the validator of fresh bodies.

        A cached body that no longer parses (written by an older, laxer version) is fetched again.
        """
        parsed: list[T] = []
        body = self.get(url, validate=lambda b: parsed.append(parse(b)), **kwargs)
        if parsed:
            return parsed[-1]
        try:
            return parse(body)
        except DataError as exc:
            log.warning("GET %s: cached answer no longer parses (%s); fetching it again", _redact(url), exc)
            self.get(url, validate=lambda b: parsed.append(parse(b)), **{**kwargs, "refresh": True})
            return parsed[-1]

    def get_json(self, url: str, **kwargs: Any) -> Any:
        """``get`` a JSON document (a body that does not parse is retried as truncated)."""
        return self.get_parsed(url, lambda body: json_payload(body, "JSON answer"), **kwargs)

    def get_text(self, url: str, encoding: str = "utf-8", **kwargs: Any) -> str:
        """``get`` a text document decoded with ``encoding`` (undecodable bytes replaced)."""
        return self.get(url, **kwargs).decode(encoding, errors="replace")
