"""The local HTTP server behind `metalm watch`.

Deliberately small and read-only: it answers GET/HEAD for a fixed table of routes - the page, its
script and style, plotly.js from the installed `plotly` package (so the page works offline), and
the JSON update endpoint - all held in memory or computed from the watched runs' known files.
No route maps a URL onto the file system, so path traversal has nothing to reach; anything not in
the table is a 404, and the run files behind the update endpoint are read only when they are regular
files inside the watched directories (no symbolic links: `tail.open_regular`, `discover`).

It binds to loopback unless told otherwise. Every request must carry a Host header naming this
server - a loopback name, or when bound elsewhere also the machine's own names and addresses and the
bound address - so a web page elsewhere cannot use DNS rebinding to read the runs through the user's
browser; a missing Host is refused too. Binding to a non-loopback address prints a warning: anyone
who can reach the port can read the runs. A request not received in full within `request_timeout`
seconds of its connection is dropped — a silent client and one that trickles a header line every
few seconds alike, so slow clients cannot hold the slots —, at most `max_threads` requests are
served at once (more get a 503 at once), and
a malformed update query (`?q=` with a cursor that is not a small non-negative integer, say) is a 400.
"""

from __future__ import annotations

import functools
import io
import json
import socket
import threading
import time
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
WILDCARDS = {"", "0.0.0.0", "::"}
REQUEST_TIMEOUT = 5.0  # seconds to receive a whole request (a slower or half-sent one is then dropped)
MAX_THREADS = 32  # requests served at once
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


class BadQuery(ValueError):
    """A malformed update query (answered with 400)."""


MAX_COUNTER = 2**53  # cursors are counters the server handed out: JSON-safe non-negative integers
MAX_KEY_CHARS = 256


def _counter(item: dict, name: str, default: int) -> int:
    value = item.get(name, default)
    if type(value) is not int or not -1 <= value <= MAX_COUNTER:
        raise BadQuery(f"cursor {name}: expected an integer from -1 to 2**53, got {str(value)[:40]!r}")
    return value


def _reject_constant(name: str) -> None:
    raise BadQuery(f"{name} is not JSON")


def parse_update_query(query: str) -> tuple[dict[int, Cursor], DynamicsSelection]:
    """The client's cursors and dynamics selection from `?q=<JSON>` (no `q`: it holds nothing, so
    the answer is a full one). A malformed query raises BadQuery: the JSON, a run id, a cursor
    counter (an integer from -1 to 2**53: no floats, no 1e999) or a dynamics key."""
    try:
        values = parse_qs(query, max_num_fields=4, strict_parsing=bool(query)).get("q")
    except ValueError as exc:
        raise BadQuery(f"query: {exc}") from None
    if not values:
        return {}, DynamicsSelection()
    try:
        data = json.loads(values[0], parse_constant=_reject_constant)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise BadQuery("q: not JSON") from exc
    if not isinstance(data, dict):
        raise BadQuery("q: expected a JSON object")
    runs = data.get("runs", {})
    if not isinstance(runs, dict):
        raise BadQuery("q.runs: expected an object of run id -> cursor")
    cursors: dict[int, Cursor] = {}
    for key, item in runs.items():
        if not (key.isascii() and key.isdigit() and len(key) <= 9) or not isinstance(item, dict):
            raise BadQuery(f"q.runs: expected run id -> cursor object, got {key[:40]!r}")
        dynamics = item.get("dynamics", "")
        if not isinstance(dynamics, str) or len(dynamics) > MAX_KEY_CHARS:
            raise BadQuery("cursor dynamics: expected a short string")
        cursors[int(key)] = Cursor(generation=_counter(item, "generation", -1), n=max(0, _counter(item, "n", 0)),
                                   dynamics=dynamics, info=_counter(item, "info", -1))
    return cursors, DynamicsSelection.from_json(data.get("selection"))


def _address(text: str) -> str:
    return text.split("%", 1)[0].lower()  # drop an IPv6 zone index


@functools.lru_cache(maxsize=1)
def machine_names() -> frozenset[str]:
    """This machine's host names and the addresses they resolve to, plus its outbound address."""
    names = {socket.gethostname(), socket.getfqdn()}
    found = set(names)
    for name in names:
        try:
            found.update(_address(str(info[4][0])) for info in socket.getaddrinfo(name, None))
        except OSError:
            pass
    outbound = _outbound_address()
    if outbound:
        found.add(outbound)
    return frozenset(n.lower() for n in found if n)


def _outbound_address() -> str | None:
    """The address other machines most likely reach this one at (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))
            return str(probe.getsockname()[0])
    except OSError:
        return None


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_NAMES or host.startswith("127.")


def allowed_hosts(bound: str) -> frozenset[str]:
    """Host header names accepted by a server bound to `bound`: loopback names, and off loopback
    also the machine's own names and addresses and the bound address itself."""
    if is_loopback(bound):
        return frozenset(LOOPBACK_NAMES | {bound})
    extra = {_address(bound)} if bound not in WILDCARDS else set()
    return frozenset(LOOPBACK_NAMES | machine_names() | extra)


class WatchServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that knows its `Watcher` and in-memory assets, checks Host headers,
    times silent connections out and serves at most `max_threads` requests at once."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], watcher: Watcher, request_timeout: float = REQUEST_TIMEOUT,
                 max_threads: int = MAX_THREADS) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.watcher = watcher
        self.assets = _load_assets()
        self.request_timeout = request_timeout
        self._slots = threading.BoundedSemaphore(max_threads)
        self.allowed_hosts = allowed_hosts(address[0])
        super().__init__(address, WatchHandler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse_busy(request)
            return
        try:
            super().process_request(request, client_address)  # starts the request's thread
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse_busy(self, request) -> None:
        """Answer 503 without starting a thread (the answer fits the socket buffer: no waiting)."""
        try:
            request.settimeout(0)
            request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                            b"Content-Length: 5\r\nRetry-After: 1\r\nConnection: close\r\n\r\nbusy\n")
        except OSError:
            pass
        self.shutdown_request(request)


class _DeadlineReader(socket.SocketIO):
    """The reading side of a connection with one deadline for the whole request: each read may wait
    only for the time left, so a client trickling a header line every few seconds is dropped as
    surely as a silent one (a per-read timeout alone would wait for it forever)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__(sock, "rb")
        self.sock = sock
        self.deadline: float | None = deadline

    def readinto(self, buffer) -> int | None:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request was not received in time")
            self.sock.settimeout(left)
        return super().readinto(buffer)


class WatchHandler(BaseHTTPRequestHandler):
    server: WatchServer
    server_version = "metalm-watch"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout)
        self._reader = _DeadlineReader(self.connection, time.monotonic() + self.server.request_timeout)
        self.rfile = io.BufferedReader(self._reader)

    def parse_request(self) -> bool:
        try:
            return super().parse_request()  # reads the headers
        finally:  # the request is in (or refused): writing the answer has the usual per-write bound
            self._reader.deadline = None
            self.connection.settimeout(self.server.request_timeout)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Quiet: one line per poll would drown the terminal."""

    def do_HEAD(self) -> None:
        self._respond(head_only=True)

    def do_GET(self) -> None:
        self._respond(head_only=False)

    def _respond(self, head_only: bool) -> None:
        host = self.headers.get("Host")
        if host is None:
            self._send(HTTPStatus.BAD_REQUEST, b"missing Host header\n", "text/plain; charset=utf-8", head_only)
            return
        if _host_name(host) not in self.server.allowed_hosts:
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
        try:
            cursors, selection = parse_update_query(query)
        except BadQuery as exc:
            body = json.dumps({"error": str(exc)}).encode("utf-8")
            self._send(HTTPStatus.BAD_REQUEST, body, "application/json", head_only)
            return
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
    """The URL to open: for a wildcard bind, the machine's outbound address (else its name)."""
    if host in WILDCARDS:
        host = _outbound_address() or socket.gethostname()
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def make_server(
    paths: Sequence[Path],
    host: str = "127.0.0.1",
    port: int = 0,
    poll_interval: float = 1.0,
    stale_after: float = 120.0,
    max_points: int = 2000,
    request_timeout: float = REQUEST_TIMEOUT,
    max_threads: int = MAX_THREADS,
) -> tuple[WatchServer, str]:
    """A ready, not yet serving, server over the runs under `paths` and its URL (port 0 picks a
    free port). Raises MetalmError for a missing path or a port that cannot be bound; warns when
    the server is reachable from other machines."""
    if poll_interval <= 0:
        raise MetalmError(f"watch: poll interval must be positive, got {poll_interval}")
    if not 0 <= port <= 65535:
        raise MetalmError(f"watch: port must be 0 (a free port) to 65535, got {port}")
    watcher = Watcher(paths, poll_interval=poll_interval, stale_after=stale_after, max_points=max_points)
    try:
        server = WatchServer((host, port), watcher, request_timeout=request_timeout, max_threads=max_threads)
    except (OSError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise MetalmError(f"watch: cannot listen on {host}:{port}: {reason}") from None
    if not is_loopback(host):
        logger.warning(f"watch: listening on {host or 'every address'} port {server.server_address[1]}, not "
                       "loopback: anyone who can reach this machine there can read the watched runs")
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
