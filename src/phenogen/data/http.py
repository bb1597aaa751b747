"""One careful HTTP client for every remote source: retries, rate limits, a resumable disk cache.

Every fetcher (NCBI, BOLD, iNaturalist, GBIF, image downloads) goes through :class:`HttpClient`:

* **retries with exponential backoff** on timeouts, dropped connections, HTTP 429 and 5xx; a
  ``Retry-After`` header (seconds or an HTTP date) wins over the computed wait;
* **truncated bodies are detected** (fewer bytes than ``Content-Length``, or a body the caller's
  ``validate`` function rejects — e.g. JSON that does not parse) and retried like a timeout;
* **rate limiting** per host (NCBI: at most 3 requests/s, 10 with an API key);
* **an on-disk cache keyed by the request** (method + URL with sorted parameters, secrets left out):
  a body is written atomically (temporary file, then ``os.replace``) only after it validated, so a
  run killed at any moment leaves either a complete entry or none, and a rerun fetches only what is
  missing;
* other 4xx answers and retries running out raise :class:`~phenogen.errors.NetworkError` naming the
  URL (with secrets redacted), the status and what to do.

>>> client = HttpClient(cache_dir=None)
>>> client.url("https://example.org/api/", "search", {"b": 2, "a": "x y"})
'https://example.org/api/search?a=x+y&b=2'
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import logging
import os
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phenogen.errors import NetworkError

__all__ = ["HttpClient", "HttpStats", "HttpStatusError", "SECRET_PARAMS", "RETRY_STATUSES"]

log = logging.getLogger(__name__)

SECRET_PARAMS: frozenset[str] = frozenset({"api_key", "key", "token", "apikey"})
RETRY_STATUSES: frozenset[int] = frozenset({408, 425, 429, 500, 502, 503, 504})
_TRANSIENT = (
    TimeoutError,
    socket.timeout,
    ConnectionError,
    http.client.IncompleteRead,
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
)


class HttpStatusError(NetworkError):
    """The server answered with a final (not retried) error status such as 404; ``status`` holds it."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Retryable(Exception):
    """A failure worth another try; ``wait`` is the server's Retry-After, when it gave one."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


@dataclass
class HttpStats:
    """What the client did: network requests sent, cache hits, retries and the seconds slept."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    slept_s: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
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


class HttpClient:
    """GET with retries, per-host rate limits and a resumable on-disk cache.

    Parameters
    ----------
    cache_dir
        Directory of the response cache; ``None`` disables caching.
    timeout_s
        Seconds before one attempt times out (connect and each read).
    retries
        Further attempts after the first one fails transiently.
    backoff_s, backoff_max_s
        First wait between attempts (doubled each time) and the cap of one wait.
    user_agent
        ``User-Agent`` header sent with every request.
    sleep, clock
        Injected ``time.sleep`` / ``time.monotonic`` (tests may record the waits).

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
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.user_agent = user_agent
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

    def _attempt(self, url: str, headers: Mapping[str, str]) -> tuple[bytes, str]:
        request = urllib.request.Request(url, headers={"User-Agent": self.user_agent, **headers})
        self._throttle(url)
        self.stats.requests += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = response.read()
                status = response.status
                expected = response.headers.get("Content-Length")
                content_type = response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            self.stats.statuses[exc.code] = self.stats.statuses.get(exc.code, 0) + 1
            if exc.code in RETRY_STATUSES:
                raise _Retryable(f"HTTP {exc.code}", _retry_after(exc.headers.get("Retry-After"))) from exc
            raise HttpStatusError(
                f"GET {_redact(url)}: HTTP {exc.code} {exc.reason}; check the base URL and the query "
                "(this status is not retried)",
                exc.code,
            ) from exc
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, OSError):  # refused, reset, DNS failure, timeout
                raise _Retryable(f"connection failed ({reason})") from exc
            raise NetworkError(f"GET {_redact(url)}: {reason}") from exc
        except _TRANSIENT as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
        if expected is not None and expected.isdigit() and int(expected) != len(body):
            raise _Retryable(f"truncated body ({len(body)} of {expected} bytes)")
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
    ) -> bytes:
        """Body of ``GET url``, from the cache when present, else fetched with retries and cached.

        ``validate(body)`` may raise ``ValueError`` (or any exception) for a malformed body, which
        counts as a truncated transfer and is retried; only validated bodies are cached.
        ``refresh=True`` ignores a cached answer and replaces it (e.g. a server token that expired).
        """
        if use_cache and not refresh:
            body = self.cached(url)
            if body is not None:
                self.stats.cache_hits += 1
                return body
        last = ""
        for attempt in range(self.retries + 1):
            try:
                body, content_type = self._attempt(url, headers or {})
                if validate is not None:
                    try:
                        validate(body)
                    except Exception as exc:  # noqa: BLE001 - any parse failure means a bad body
                        raise _Retryable(
                            f"malformed or truncated body ({type(exc).__name__}: {exc})"
                        ) from exc
            except _Retryable as exc:
                last = str(exc)
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
        raise NetworkError(
            f"GET {_redact(url)}: gave up after {self.retries + 1} attempt(s), last: {last}; "
            "the service may be down or rate-limiting — rerun later (finished requests are cached)"
        )

    def get_json(self, url: str, **kwargs: Any) -> Any:
        """``get`` a JSON document (a body that does not parse is retried as truncated)."""
        return json.loads(self.get(url, validate=json.loads, **kwargs))

    def get_text(self, url: str, encoding: str = "utf-8", **kwargs: Any) -> str:
        """``get`` a text document decoded with ``encoding`` (undecodable bytes replaced)."""
        return self.get(url, **kwargs).decode(encoding, errors="replace")
