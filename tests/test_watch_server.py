"""The `metalm watch` HTTP server: fixed routes only, path traversal gets 404, incremental API."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from urllib.parse import quote

import pytest

from metalm.errors import MetalmError
from metalm.watch import make_server
from metalm.watch.server import machine_names


def _line(step: int) -> str:
    return json.dumps({"step": step, "loss": 4.0, "lr": 1e-3, "tokens": step * 64, "flops": step * 1e6,
                       "time": step * 0.1, "step_kind": "ar"}) + "\n"


@contextmanager
def serving(paths, **kwargs):
    """`make_server(paths, **kwargs)` serving on a daemon thread: (server, url); shut down and closed
    on exit."""
    server, url = make_server(paths, **kwargs)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server, url
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def served(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(_line(s) for s in range(1, 6)))
    (run / "config.yaml").write_text("model:\n  preset: nano\n")
    (tmp_path / "secret.txt").write_text("do not serve\n")
    with serving([run], poll_interval=0.01) as (server, url):
        yield server, url, run


def _get(server, target: str, method: str = "GET", host: str | None = None) -> tuple[int, bytes, dict]:
    """Send `target` verbatim as the request target (no client-side normalisation)."""
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        connection.putrequest(method, target, skip_host=host is not None, skip_accept_encoding=True)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


def _update(server, runs: dict | None = None) -> dict:
    query = json.dumps({"runs": runs or {}, "selection": {}})
    status, body, headers = _get(server, "/api/update?q=" + quote(query))
    assert status == 200 and headers["Content-Type"] == "application/json"
    return json.loads(body)


def test_binds_loopback_by_default_and_serves_the_page_and_plotly(served):
    server, url, _ = served
    assert server.server_address[0] == "127.0.0.1" and url.startswith("http://127.0.0.1:")
    status, body, headers = _get(server, "/")
    assert status == 200 and b"/static/plotly.min.js" in body and b"/static/watch.js" in body
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    status, body, _ = _get(server, "/static/plotly.min.js")
    assert status == 200 and len(body) > 1_000_000 and b"plotly" in body[:2000].lower()
    for asset in ("/static/watch.js", "/static/watch.css", "/index.html"):
        assert _get(server, asset)[0] == 200
    assert _get(server, "/static/watch.js", method="HEAD")[0] == 200


@pytest.mark.parametrize(
    "target",
    [
        "/../secret.txt",
        "/../../../../etc/passwd",
        "/static/../server.py",
        "/static/../../secret.txt",
        "/static/%2e%2e/server.py",
        "/static/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2fsecret.txt",
        "/static/%252e%252e/server.py",
        "/static/..\\server.py",
        "//etc/passwd",
        "/etc/passwd",
        "/static//etc/passwd",
        "/static/",
        "/static/tail.py",
        "/static/../__init__.py",
        "/metrics.jsonl",
        "/run/metrics.jsonl",
        "/api/update/../../secret.txt",
        "http://127.0.0.1/etc/passwd",
    ],
)
def test_path_traversal_and_unknown_paths_get_404(served, target):
    server, _, run = served
    status, body, _ = _get(server, target)
    assert status == 404, (target, status)
    assert b"do not serve" not in body and b"root:" not in body


def test_absolute_paths_of_watched_files_get_404(served):
    server, _, run = served
    for path in (run / "metrics.jsonl", run / "config.yaml", run.parent / "secret.txt"):
        assert _get(server, str(path))[0] == 404
        assert _get(server, "/static" + str(path))[0] == 404
        assert _get(server, quote(str(path), safe=""))[0] == 404


def _raw(server, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data` as is on a new connection; what the server answers before closing it."""
    with socket.create_connection(server.server_address[:2], timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_foreign_host_header_and_other_methods_are_refused(served):
    server, _, _ = served
    assert _get(server, "/", host="attacker.example:80")[0] == 403
    assert _get(server, "/", host="")[0] == 403
    assert _raw(server, b"GET / HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 400")  # no Host header at all
    assert _get(server, "/api/update", host="localhost:1234")[0] == 200
    assert _get(server, "/", method="POST")[0] == 501
    assert _get(server, "/", method="DELETE")[0] == 501


def test_update_api_is_incremental(served):
    server, _, run = served
    first = _update(server)
    (answer,) = first["runs"]
    metrics = answer["metrics"]
    assert metrics["reset"] and metrics["n"] == 5 and metrics["series"]["loss"]["step"] == [1, 2, 3, 4, 5]
    cursor = {"generation": metrics["generation"], "n": metrics["n"], "dynamics": answer["dynamics"]["key"],
              "info": answer["info"]["revision"]}
    with open(run / "metrics.jsonl", "a") as f:
        f.write(_line(6) + _line(7) + '{"step": 8, "lo')
    time.sleep(0.05)  # files are re-read at most every poll_interval / 2
    (answer,) = _update(server, {str(answer["id"]): cursor})["runs"]
    assert not answer["metrics"]["reset"] and answer["metrics"]["series"]["loss"]["step"] == [6, 7]
    assert "info" not in answer and "dynamics" not in answer


def test_update_without_a_query_gets_a_full_answer(served):
    server, _, _ = served
    for target in ("/api/update", "/api/update?"):
        status, body, _ = _get(server, target)
        assert status == 200 and json.loads(body)["runs"][0]["metrics"]["reset"] is True


@pytest.mark.parametrize("query", [
    "q=not-json", "q=%5B1%5D", "q=" + quote('{"runs": {"x": 1, "0": {"n": "a"}}}'), "a=1&b=2&c=3&d=4&e=5&q=1",
    "q=" + quote('{"runs":{"0":{"generation":1e999}}}'),  # once an OverflowError on the server
    "q=" + quote('{"runs":{"0":{"generation":NaN}}}'),
    "q=" + quote('{"runs":{"0":{"n":1.5}}}'),
    "q=" + quote('{"runs":{"0":{"info":true}}}'),
    "q=" + quote('{"runs":{"0":{"n":%d}}}' % 2**64),
    "q=" + quote('{"runs":{"-1":{}}}'),
    "q=" + quote('{"runs":[1]}'),
    "q=" + quote('{"runs":{"0":{"dynamics":7}}}'),
])
def test_malformed_update_queries_get_400(served, query):
    server, _, _ = served
    status, body, headers = _get(server, "/api/update?" + query)
    assert status == 400 and headers["Content-Type"] == "application/json" and "error" in json.loads(body)
    assert _update(server)["runs"]  # and the server keeps serving


def test_make_server_rejects_missing_paths(tmp_path):
    with pytest.raises(MetalmError, match="not a directory"):
        make_server([tmp_path / "nope"])
    with pytest.raises(MetalmError, match="at least one"):
        make_server([])


def test_symlinks_out_of_the_watched_tree_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.yaml").write_text("secret: do not serve\n")
    (outside / "metrics.jsonl").write_text(_line(1))
    foreign = tmp_path / "foreign-run"  # a run elsewhere, linked into the experiment
    foreign.mkdir()
    (foreign / "config.yaml").write_text("secret: linked run\n")
    (foreign / "metrics.jsonl").write_text(_line(1))
    exp = tmp_path / "exp"
    run = exp / "arm" / "seed-0"
    run.mkdir(parents=True)
    (run / "config.yaml").symlink_to(outside / "secret.yaml")  # a file linked out of the run
    (run / "metrics.jsonl").symlink_to(outside / "metrics.jsonl")
    os.mkfifo(run / "status.json")  # not a regular file either: must not hang the reader
    (exp / "linked").symlink_to(foreign, target_is_directory=True)
    with serving([exp], poll_interval=0.01) as (server, _):
        answer = _update(server)
    assert [r["name"] for r in answer["runs"]] == ["arm/seed-0"]  # the linked directory is no run
    (state,) = answer["runs"]
    assert state["info"]["config"] is None and state["metrics"]["n"] == 0
    assert b"do not serve" not in json.dumps(answer).encode() and "linked run" not in json.dumps(answer)


def test_a_watched_path_may_itself_be_a_link(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(_line(1))
    (tmp_path / "alias").symlink_to(run, target_is_directory=True)
    with serving([tmp_path / "alias"], poll_interval=0.01) as (server, _):
        assert _update(server)["runs"][0]["metrics"]["n"] == 1  # the user named it: it is watched


def test_all_interfaces_warns_prints_a_usable_url_and_checks_host(tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(_line(1))
    with caplog.at_level(logging.WARNING, logger="metalm"), \
            serving([run], host="0.0.0.0", poll_interval=0.01) as (server, url):
        assert any("not loopback" in r.getMessage() for r in caplog.records)  # before any request
        assert "0.0.0.0" not in url and "127.0.0.1" not in url
        port = server.server_address[1]
        assert _get(server, "/", host="evil.com")[0] == 403
        assert _get(server, "/", host=f"evil.com:{port}")[0] == 403
        assert _raw(server, b"GET / HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 400")
        assert _get(server, "/", host=f"127.0.0.1:{port}")[0] == 200
        assert _get(server, "/", host=url.split("/")[2])[0] == 200  # the printed URL works
        for name in machine_names():
            assert _get(server, "/", host=f"[{name}]:{port}" if ":" in name else f"{name}:{port}")[0] == 200


def test_a_silent_or_half_sent_request_is_dropped_after_the_timeout(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with serving([run], poll_interval=0.01, request_timeout=0.3) as (server, _):
        start = time.monotonic()
        answer = _raw(server, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n", timeout=10)  # headers never end
        assert time.monotonic() - start < 5 and b"200 OK" not in answer
        start = time.monotonic()
        _raw(server, b"", timeout=10)  # connects, says nothing
        assert time.monotonic() - start < 5
        assert _get(server, "/")[0] == 200


def test_requests_beyond_the_thread_cap_get_503_at_once(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with serving([run], poll_interval=0.01, request_timeout=5, max_threads=4) as (server, _):
        idle = []
        try:
            base = threading.active_count()
            for _ in range(4):  # four silent connections hold all four request threads
                idle.append(socket.create_connection(server.server_address[:2], timeout=5))
            deadline = time.monotonic() + 5
            while threading.active_count() < base + 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            for _ in range(20):
                idle.append(socket.create_connection(server.server_address[:2], timeout=5))
            assert _get(server, "/")[0] == 503
            assert threading.active_count() <= base + 4
        finally:
            for sock in idle:
                sock.close()
        deadline = time.monotonic() + 5
        while _get(server, "/")[0] != 200 and time.monotonic() < deadline:  # slots come back as connections close
            time.sleep(0.05)
        assert _get(server, "/")[0] == 200


def test_make_server_refuses_a_port_out_of_range(tmp_path):
    with pytest.raises(MetalmError, match="port"):
        make_server([tmp_path], port=99999)


def test_clients_trickling_their_headers_are_dropped_and_a_normal_request_is_served(tmp_path):
    """Slow clients holding every slot, each sending a header line well within the per-read timeout:
    the bound on the whole request drops them, so a normal request is served within seconds."""
    run = tmp_path / "run"
    run.mkdir()
    stop = threading.Event()

    def trickle() -> None:
        with socket.create_connection(server.server_address[:2], timeout=5) as sock:
            try:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                while not stop.wait(0.2):
                    sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                pass  # dropped by the server

    with serving([run], poll_interval=0.01, request_timeout=1.0, max_threads=4) as (server, _):
        clients = [threading.Thread(target=trickle, daemon=True) for _ in range(8)]
        for client in clients:
            client.start()
        try:
            time.sleep(0.3)
            assert _get(server, "/")[0] == 503  # every slot held
            start = time.monotonic()
            while _get(server, "/")[0] != 200 and time.monotonic() - start < 10:
                time.sleep(0.1)
            assert time.monotonic() - start < 3  # served while they trickle, not after
        finally:
            stop.set()
            for client in clients:
                client.join(5)


def test_an_experiment_verdict_is_served_once_its_report_is_written(tmp_path):
    from helpers import make_run

    from metalm.experiment.report import write_report
    from metalm.experiment.summary import read_summary

    exp = tmp_path / "exp"
    runs = {"vanilla": {0: make_run(exp, "vanilla", 0, [5.0, 4.5, 4.2])},
            "meta": {0: make_run(exp, "meta", 0, [5.0, 4.4, 4.0], meta={"enabled": True})}}
    with serving([exp], poll_interval=0.01) as (server, _):
        first = _update(server)
        assert len(first["runs"]) == 2 and first["experiments"] == []  # no report yet
        write_report(exp, runs, "vanilla", None)
        time.sleep(0.05)
        (shown,) = _update(server)["experiments"]
        summary = read_summary(exp)
        assert summary is not None and shown["verdict"] == summary.verdict and shown["name"] == "exp"
        assert shown["report"] == str(exp.resolve() / "report.md") and shown["unfinished"] == []
        assert [(a["arm"], a["role"], a["seeds"], a["final_val_loss"]) for a in shown["arms"]] == [
            ("vanilla", "baseline", 1, 4.2), ("meta", "meta", 1, 4.0)]
        (exp / "summary.json").write_text('{"baseline": "vanilla", "ar')  # being rewritten: the last good one stays
        time.sleep(0.05)
        assert _update(server)["experiments"] == [shown]
        (exp / "summary.json").unlink()
        time.sleep(0.05)
        assert _update(server)["experiments"] == []
