"""A scripted HTTP server on 127.0.0.1 for the network tests (never any other address).

Routes match a path and, optionally, query parameters; each route holds a list of responses that
are served in turn (the last one repeats), so a test can script "500, then 200" or "429 with
Retry-After, then 200". A response can be delayed (to trigger client timeouts) or truncated (a
``Content-Length`` larger than the body sent). ``{{BASE}}`` in a body becomes the server's address.
Every request is recorded in ``server.requests`` as ``(path, query_dict)``.
"""

from __future__ import annotations

import base64
import json
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
                body = reply.body.replace(b"{{BASE}}", server.base.encode())
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    self.wfile.write(body if reply.truncate_to is None else body[: reply.truncate_to])
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

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

    The preprocessor and query answers are the ones recorded for *Parus major* with the name
    swapped; the TSV download holds the rows of ``passerines/bold_v5_documents.tsv`` for ``taxon``.
    """
    pre = (PASSERINES / "bold_v5_preprocessor_parus.json").read_text().replace("Parus major", taxon)
    recorded = json.loads((PASSERINES / "bold_v5_query_parus.json").read_text())["query_id"]
    query_id = recorded if taxon == "Parus major" else base64.b64encode(taxon.encode()).decode()
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
    """Every name unknown to BOLD: the preprocessor's recorded 'failed_terms' answer."""
    srv.add(f"{prefix}/query/preprocessor", fixture("passerines/bold_v5_preprocessor_unmatched.json"))
