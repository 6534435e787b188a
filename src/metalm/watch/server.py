"""The local HTTP server behind `metalm watch`.

Deliberately small and read-only: it answers GET/HEAD for a fixed table of routes - the page, its
script and style, plotly.js from the installed `plotly` package (so the page works offline), and
the JSON update endpoint - all held in memory or computed from the watched runs' known files.
No route maps a URL onto the file system, so path traversal has nothing to reach; anything not in
the table is a 404. It binds to loopback unless told otherwise, and while on loopback it also
refuses requests whose Host header is not a loopback name (a web page elsewhere cannot use DNS
rebinding to read the runs through the user's browser).
"""

from __future__ import annotations

import functools
import json
import socket
import webbrowser
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from metalm.errors import MetalmError
from metalm.log import logger
from metalm.watch.run_state import Cursor, DynamicsSelection
from metalm.watch.watcher import Watcher

LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
STATIC_FILES = {"index.html": "text/html; charset=utf-8", "watch.js": "text/javascript; charset=utf-8", "watch.css": "text/css; charset=utf-8"}
CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self' 'unsafe-inline'; font-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


@functools.lru_cache(maxsize=1)
def _plotly_js() -> bytes:
    """plotly.js (about 5 MB) as shipped in the installed `plotly` package: no CDN, works offline."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError as exc:
        raise MetalmError("watch: the live view needs plotly (pip install plotly)") from exc
    return get_plotlyjs().encode("utf-8")


def _load_assets() -> dict[str, tuple[bytes, str]]:
    """URL path -> (body, content type), read once at start-up."""
    static = resources.files("metalm.watch") / "static"
    assets = {f"/static/{name}": ((static / name).read_bytes(), kind) for name, kind in STATIC_FILES.items()}
    assets["/"] = assets["/index.html"] = assets.pop("/static/index.html")
    assets["/static/plotly.min.js"] = (_plotly_js(), "text/javascript; charset=utf-8")
    return assets


def _host_name(header: str) -> str:
    """'127.0.0.1:8000' -> '127.0.0.1', '[::1]:8000' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def parse_update_query(query: str) -> tuple[dict[int, Cursor], DynamicsSelection]:
    """The client's cursors and dynamics selection from `?q=<JSON>`; anything malformed is
    treated as "holds nothing" so the answer is simply a full one."""
    try:
        values = parse_qs(query, max_num_fields=4).get("q")
    except ValueError:
        values = None
    data: Any = {}
    if values:
        try:
            data = json.loads(values[0])
        except (json.JSONDecodeError, RecursionError):
            data = {}
    data = data if isinstance(data, dict) else {}
    cursors: dict[int, Cursor] = {}
    runs = data.get("runs")
    for key, item in (runs.items() if isinstance(runs, dict) else []):
        if not isinstance(item, dict):
            continue
        try:
            cursors[int(key)] = Cursor(
                generation=int(item.get("generation", -1)),
                n=max(0, int(item.get("n", 0))),
                dynamics=str(item.get("dynamics", "")),
                info=int(item.get("info", -1)),
            )
        except (TypeError, ValueError):
            continue
    return cursors, DynamicsSelection.from_json(data.get("selection"))


class WatchServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that knows its `Watcher` and in-memory assets."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], watcher: Watcher) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.watcher = watcher
        self.assets = _load_assets()
        self.loopback_only = address[0] in LOOPBACK_NAMES
        super().__init__(address, WatchHandler)


class WatchHandler(BaseHTTPRequestHandler):
    server: WatchServer
    server_version = "metalm-watch"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Quiet: one line per poll would drown the terminal."""

    def do_HEAD(self) -> None:
        self._respond(head_only=True)

    def do_GET(self) -> None:
        self._respond(head_only=False)

    def _respond(self, head_only: bool) -> None:
        if self.server.loopback_only and _host_name(self.headers.get("Host", "127.0.0.1")) not in LOOPBACK_NAMES:
            self._send(HTTPStatus.FORBIDDEN, b"forbidden host\n", "text/plain; charset=utf-8", head_only)
            return
        raw_path, _, query = self.path.partition("?")
        path = unquote(raw_path.split("#", 1)[0])
        if path == "/api/update":
            self._send_update(query, head_only)
            return
        asset = self.server.assets.get(path)
        if asset is None:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", head_only)
            return
        body, kind = asset
        self._send(HTTPStatus.OK, body, kind, head_only, cache="max-age=3600" if path.startswith("/static/") else "no-cache")

    def _send_update(self, query: str, head_only: bool) -> None:
        cursors, selection = parse_update_query(query)
        try:
            answer = self.server.watcher.update(cursors, selection)
            body = json.dumps(answer, allow_nan=False, separators=(",", ":")).encode("utf-8")
        except Exception as exc:  # noqa: BLE001 - report to the page and the terminal, keep serving
            logger.warning(f"watch: update failed: {exc!r}")
            body = json.dumps({"error": str(exc)}).encode("utf-8")
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, body, "application/json", head_only)
            return
        self._send(HTTPStatus.OK, body, "application/json", head_only)

    def _send(self, status: HTTPStatus, body: bytes, kind: str, head_only: bool, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        if not head_only:
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the page was closed mid-answer


def _url(host: str, port: int) -> str:
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def make_server(
    paths: Sequence[Path],
    host: str = "127.0.0.1",
    port: int = 0,
    poll_interval: float = 1.0,
    stale_after: float = 120.0,
    max_points: int = 2000,
) -> tuple[WatchServer, str]:
    """A ready, not yet serving, server over the runs under `paths` and its URL (port 0 picks a
    free port). Raises MetalmError for a missing path or a port that cannot be bound."""
    if poll_interval <= 0:
        raise MetalmError(f"watch: poll interval must be positive, got {poll_interval}")
    watcher = Watcher(paths, poll_interval=poll_interval, stale_after=stale_after, max_points=max_points)
    try:
        server = WatchServer((host, port), watcher)
    except OSError as exc:
        raise MetalmError(f"watch: cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return server, _url(host, server.server_address[1])


def serve(
    paths: Sequence[Path],
    host: str = "127.0.0.1",
    port: int = 0,
    poll_interval: float = 1.0,
    open_browser: bool = False,
) -> None:
    """Serve the live view until interrupted (Ctrl-C); prints the URL to open."""
    server, url = make_server([Path(p) for p in paths], host=host, port=port, poll_interval=poll_interval)
    print(f"metalm watch: serving {url}  (Ctrl-C to stop)", flush=True)  # the result: the URL to open (stdout)
    if open_browser:
        webbrowser.open(url)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
