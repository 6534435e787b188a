"""The `metalm watch` HTTP server: fixed routes only, path traversal gets 404, incremental API."""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import quote

import pytest

from metalm.errors import MetalmError
from metalm.watch import make_server


def _line(step: int) -> str:
    return json.dumps({"step": step, "loss": 4.0, "lr": 1e-3, "tokens": step * 64, "flops": step * 1e6,
                       "time": step * 0.1, "step_kind": "ar"}) + "\n"


@pytest.fixture
def served(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(_line(s) for s in range(1, 6)))
    (run / "config.yaml").write_text("model:\n  preset: nano\n")
    (tmp_path / "secret.txt").write_text("do not serve\n")
    server, url = make_server([run], poll_interval=0.01)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server, url, run
    finally:
        server.shutdown()
        server.server_close()


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


def test_foreign_host_header_and_other_methods_are_refused(served):
    server, _, _ = served
    assert _get(server, "/", host="attacker.example:80")[0] == 403
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


@pytest.mark.parametrize("query", ["q=not-json", "q=%5B1%5D", "q=" + quote('{"runs": {"x": 1, "0": {"n": "a"}}}'), "a=1&b=2&c=3&d=4&e=5&q=1", ""])
def test_malformed_update_queries_get_a_full_answer(served, query):
    server, _, _ = served
    status, body, _ = _get(server, "/api/update?" + query)
    assert status == 200 and json.loads(body)["runs"][0]["metrics"]["reset"] is True


def test_make_server_rejects_missing_paths(tmp_path):
    with pytest.raises(MetalmError, match="not a directory"):
        make_server([tmp_path / "nope"])
    with pytest.raises(MetalmError, match="at least one"):
        make_server([])
