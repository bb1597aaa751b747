"""A scripted HTTP server on 127.0.0.1 for the network tests (never any other address).

Routes match a path and, optionally, query parameters; each route holds a list of responses that
are served in turn (the last one repeats), so a test can script "500, then 200" or "429 with
Retry-After, then 200". ``{{BASE}}`` in a body becomes the server's address. Every request is
recorded in ``server.requests`` as ``(path, query_dict)``.

A response can also misbehave, as real servers and proxies do: be delayed (client timeouts), be
truncated (a ``Content-Length`` larger than the body sent), drip its body — or its status line and
headers — one byte at a time, stream a generated body of any size (with a true, false or no
``Content-Length``), use chunked transfer encoding (valid or broken), reset the connection (TCP RST)
mid-body, or be raw bytes that are not HTTP at all.

The fixture answers under ``tests/data/fixtures`` are synthetic, not recordings of the real services:
``make_fixtures.py`` writes them in each service's format (seeded random DNA, GenBank text from
Biopython's writer, small flat-colour JPEGs drawn with PIL).
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).parent / "data" / "fixtures"
PASSERINES = FIXTURES / "passerines"


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    truncate_to: int | None = None  # send only this many bytes of the body, announcing all of them
    drip_s: float = 0.0  # seconds between single bytes of the body
    drip_headers: bool = False  # drip the status line and headers too
    size: int | None = None  # a generated body of this many bytes, streamed (never held whole)
    content_length: int | str | None = "auto"  # "auto": the true length; None: no header; an int: that value
    chunked: bool = False  # Transfer-Encoding: chunked
    bad_chunk: bool = False  # with chunked: a chunk-size line that is not hexadecimal
    reset_after: int | None = None  # send this many body bytes, then reset the connection (RST)
    raw: bytes | None = None  # written as-is instead of an HTTP response, then the connection closes


@dataclass
class Route:
    path: str
    query: dict[str, str]
    replies: list[Reply]
    served: int = 0


def fixture(name: str, status: int = 200, **kwargs) -> Reply:
    ctype = (
        "application/json"
        if name.endswith(".json")
        else "image/jpeg"
        if name.endswith(".jpg")
        else "text/plain"
    )
    return Reply(status, (FIXTURES / name).read_bytes(), {"Content-Type": ctype}, **kwargs)


class FixtureServer:
    """``with FixtureServer() as srv: srv.add("/path", Reply(...)); srv.base`` is ``http://127.0.0.1:PORT``."""

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802
                parts = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(parts.query))
                reply = server._reply(parts.path, query)
                if reply.delay:
                    time.sleep(reply.delay)
                self.close_connection = True
                try:
                    self._send(reply)
                except OSError:  # the client hung up (deadline, size cap): expected here
                    pass

            def _write(self, data: bytes, drip: float) -> None:
                if not drip:
                    self.wfile.write(data)
                    return
                for i in range(len(data)):
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                    time.sleep(drip)

            def _send(self, reply: Reply) -> None:
                if reply.raw is not None:
                    self.wfile.write(reply.raw)
                    self.wfile.flush()
                    return
                body = reply.body.replace(b"{{BASE}}", server.base.encode())
                size = len(body) if reply.size is None else reply.size
                headers = [f"HTTP/1.1 {reply.status} {self.responses.get(reply.status, ('',))[0]}"]
                headers += [f"{key}: {value}" for key, value in reply.headers.items()]
                if reply.chunked:
                    headers.append("Transfer-Encoding: chunked")
                elif reply.content_length == "auto":
                    headers.append(f"Content-Length: {size}")
                elif reply.content_length is not None:
                    headers.append(f"Content-Length: {reply.content_length}")
                headers.append("Connection: close")
                self._write(
                    ("\r\n".join(headers) + "\r\n\r\n").encode(), reply.drip_s if reply.drip_headers else 0
                )
                limit = size if reply.truncate_to is None else min(size, reply.truncate_to)
                sent = 0
                for piece in self._pieces(body, reply.size, limit):
                    if reply.reset_after is not None and sent + len(piece) > reply.reset_after:
                        self.wfile.write(piece[: reply.reset_after - sent])
                        self.wfile.flush()
                        # SO_LINGER 0: close() sends RST instead of FIN
                        self.connection.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        self.connection.close()
                        return
                    sent += len(piece)
                    if reply.chunked:
                        size_line = b"zz" if reply.bad_chunk else f"{len(piece):x}".encode()
                        piece = size_line + b"\r\n" + piece + b"\r\n"
                    self._write(piece, reply.drip_s)
                if reply.chunked and not reply.bad_chunk:
                    self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            @staticmethod
            def _pieces(body: bytes, size: int | None, limit: int):
                if size is None:
                    if body[:limit]:
                        yield body[:limit]
                    return
                block = b"x" * 65536
                left = limit
                while left > 0:
                    yield block[: min(left, len(block))]
                    left -= len(block)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def add(self, path: str, *replies: Reply, **query: str) -> Route:
        """Serve ``replies`` in turn at ``path`` for requests whose query contains ``query``."""
        route = Route(path, query, list(replies))
        self.routes.insert(0, route)  # later routes win, so tests can override
        return route

    def _reply(self, path: str, query: dict[str, str]) -> Reply:
        with self._lock:
            self.requests.append((path, query))
            for route in self.routes:
                if route.path == path and all(query.get(k) == v for k, v in route.query.items()):
                    reply = route.replies[min(route.served, len(route.replies) - 1)]
                    route.served += 1
                    return reply
        return Reply(404, b"not found")

    def count(self, path: str) -> int:
        return sum(p == path for p, _ in self.requests)

    def __enter__(self) -> FixtureServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def bold_v5_routes(srv: FixtureServer, taxon: str, prefix: str = "/bold/api") -> str:
    """Serve the BOLD v5 portal API's three answers for ``taxon``; returns its documents path.

    The preprocessor and query answers are the *Parus major* fixtures with the name
    swapped; the TSV download holds the rows of ``passerines/bold_v5_documents.tsv`` for ``taxon``.
    """
    pre = (PASSERINES / "bold_v5_preprocessor_parus.json").read_text().replace("Parus major", taxon)
    fixed_id = json.loads((PASSERINES / "bold_v5_query_parus.json").read_text())["query_id"]
    query_id = fixed_id if taxon == "Parus major" else base64.b64encode(taxon.encode()).decode()
    header, *rows = (PASSERINES / "bold_v5_documents.tsv").read_text().splitlines()
    col = header.split("\t").index("species")
    tsv = "\n".join([header] + [r for r in rows if r.split("\t")[col] == taxon]) + "\n"
    json_type = {"Content-Type": "application/json"}
    srv.add(f"{prefix}/query/preprocessor", Reply(200, pre.encode(), json_type), query=f"tax:{taxon}")
    srv.add(
        f"{prefix}/query",
        Reply(200, json.dumps({"query_id": query_id}).encode(), json_type),
        query=f"tax:species:{taxon}",
        extent="full",
    )
    path = f"{prefix}/documents/{urllib.parse.quote(query_id, safe='')}/download"
    srv.add(path, Reply(200, tsv.encode(), {"Content-Type": "text/tab-separated-values"}), format="tsv")
    return path


def bold_v5_unmatched(srv: FixtureServer, prefix: str = "/bold/api") -> None:
    """Every name unknown to BOLD: the preprocessor's 'failed_terms' answer (fixture)."""
    srv.add(f"{prefix}/query/preprocessor", fixture("passerines/bold_v5_preprocessor_unmatched.json"))
