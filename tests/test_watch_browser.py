"""End to end: the live page in headless Chromium follows runs that are being written.

Two tests: `metalm watch` (the CLI, a subprocess) on a real `metalm train` process, and the server
on two scripted writers, which checks the page's details (meta charts, heatmaps, phase read-out,
config differences, axis switch) deterministically.

Chromium is driven through the DevTools protocol over `--remote-debugging-pipe` (JSON messages
separated by NUL bytes on fds 3 and 4), which needs neither a websocket library nor the network.
Skipped where Debian's `chromium` is not installed. Set METALM_WATCH_SCREENSHOT to a file path to
keep the screenshot (it is always written under the test's tmp_path).
"""

from __future__ import annotations

import base64
import fcntl
import json
import math
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import make_run, tiny_overrides
from metalm.experiment.report import write_report
from metalm.watch import make_server

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)"
)


class DevToolsPipe:
    """A minimal Chrome DevTools Protocol client over --remote-debugging-pipe."""

    def __init__(self, chromium: str, profile: Path, width: int = 1400, height: int = 1000) -> None:
        to_chrome_r, self._write_fd = os.pipe()
        self._read_fd, from_chrome_w = os.pipe()
        # Move the child's ends above 3/4 so dup2 onto 3 and 4 cannot clobber one another.
        to_chrome_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
        from_chrome_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)

        def wire_pipes() -> None:
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        args = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
            "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}", "--remote-debugging-pipe",
            f"--window-size={width},{height}", "about:blank",
        ]
        self.process = subprocess.Popen(
            args, pass_fds=(3, 4), preexec_fn=wire_pipes, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._messages: queue.Queue = queue.Queue()
        self._next_id = 0
        self.events: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = os.read(self._read_fd, 1 << 16)
            if not chunk:
                self._messages.put(None)
                return
            buffer += chunk
            *complete, buffer = buffer.split(b"\0")
            for message in complete:
                self._messages.put(json.loads(message))

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if reply is None:
                raise RuntimeError("chromium closed the DevTools pipe")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def page(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        return self.call(method, params, self.session, timeout)

    def evaluate(self, expression: str):
        result = self.page("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} ({expression})")

    def screenshot(self, path: Path, width: int = 1400) -> None:
        """The whole page: the viewport is made as tall as the page (so the page lays itself out
        as a user scrolling it would see it), then captured."""
        height = int(self.page("Page.getLayoutMetrics")["cssContentSize"]["height"])
        self.page("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        time.sleep(1.0)  # let the charts follow the resize
        data = self.page("Page.captureScreenshot", {"format": "png"})["data"]
        self.page("Emulation.clearDeviceMetricsOverride")
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - already gone
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._write_fd)


class FakeTraining:
    """Appends metrics/dynamics rows in the run-directory format, like a training run would."""

    def __init__(self, run: Path, meta: bool, total_steps: int = 2000) -> None:
        self.run, self.meta, self.total_steps = run, meta, total_steps
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(f"model:\n  preset: nano\nmeta:\n  enabled: {str(meta).lower()}\n")
        self.step = 0
        self._lock = threading.Lock()
        self._write([{"step": 0, "val_loss": 10.5, "tokens": 0, "flops": 0, "time": 0}], [])

    def _write(self, rows: list[dict], dynamics: list[dict]) -> None:
        with open(self.run / "metrics.jsonl", "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
        if dynamics:
            with open(self.run / "dynamics.jsonl", "a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in dynamics))
        status = {"state": "running", "step": self.step, "total_steps": self.total_steps, "updated": time.time()}
        (self.run / "status.tmp").write_text(json.dumps(status))
        os.replace(self.run / "status.tmp", self.run / "status.json")

    def advance(self, n_steps: int, jump_to: int | None = None) -> int:
        with self._lock:
            rows, dynamics = [], []
            for _ in range(n_steps):
                self.step = jump_to if jump_to is not None else self.step + 1
                s = self.step
                loss = 2.5 + 7.5 * math.exp(-s / (250 if self.meta else 350)) + 0.05 * math.sin(s)
                kind = "meta" if self.meta and s % 3 == 0 else "ar"
                row = {"step": s, "loss": loss, "lr": 1e-3, "tokens": s * 8192, "flops": s * 3.1e10,
                       "time": s * 0.05, "step_kind": kind}
                if kind == "meta":
                    progress = 1 - math.exp(-s / 400)
                    row.update(meta_loss=loss + 0.3, support_acc_before=0.25 + 0.2 * progress,
                               support_acc_after=0.3 + 0.5 * progress, query_acc=0.28 + 0.4 * progress)
                if s % 25 == 0:
                    row["val_loss"] = loss + 0.15
                rows.append(row)
                if s % 50 == 0:
                    for layer in range(4):
                        peak = 300 + 150 * layer
                        shape = math.exp(-((s - peak) / 400) ** 2)
                        for component in ("q", "k", "v", "o", "gate", "up", "down"):
                            dynamics.append({"step": s, "group": "weights", "layer": layer, "component": component,
                                             "erank": 20 + 10 * shape, "per": 0.3 + 0.2 * shape, "shape": [64, 64]})
                        dynamics.append({"step": s, "group": "activations", "layer": layer, "component": "output",
                                         "erank": 12 + 20 * shape + layer, "per": 0.2 + 0.3 * shape, "shape": [512, 64]})
                        for head in range(4):
                            entropy = 2.0 * (1 - 0.5 * (1 - math.exp(-s / (200 + 100 * layer))))
                            dynamics.append({"step": s, "group": "attention", "layer": layer, "head": head,
                                             "entropy": entropy + 0.05 * head, "entropy_norm": entropy / 3})
            self._write(rows, dynamics)
            return self.step


def test_live_page_renders_and_follows_a_training_run(tmp_path):
    experiment = tmp_path / "experiment"
    runs = [FakeTraining(experiment / "vanilla", meta=False), FakeTraining(experiment / "meta", meta=True)]
    runs[1].advance(400)
    runs[0].advance(40)  # its first dynamics rows (step 50) come after the page has drawn the other run's
    (runs[1].run / "phases.json").write_text(json.dumps({"erank": {str(layer): 300 + 150 * layer for layer in range(4)},
                                                          "entropy": {str(layer): 50 * layer for layer in range(4)}}))
    stop = threading.Event()

    def keep_training() -> None:
        while not stop.wait(0.25):
            for run in runs:
                run.advance(5)

    server, url = make_server([experiment], poll_interval=0.5)
    threads = [threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True),
               threading.Thread(target=keep_training, daemon=True)]
    for thread in threads:
        thread.start()
    browser = DevToolsPipe(CHROMIUM, tmp_path / "profile")
    try:
        browser.page("Page.enable")
        browser.page("Page.navigate", {"url": url})
        charts = browser.wait_for(
            "document.querySelectorAll('.main-svg').length >= 8 && document.querySelectorAll('#chart-loss .scatterlayer .trace').length >= 4"
            " && document.querySelectorAll('.dyn-run .heatmaplayer').length >= 2 && document.querySelectorAll('.main-svg').length",
            timeout=40, what="the loss, meta and dynamics charts to render")
        assert charts >= 8
        browser.wait_for(  # charts drawn before the second run's column appeared follow its narrowing
            "[...document.querySelectorAll('.dyn-run .chart, #chart-loss')].every(d => "
            "Math.abs(d.clientWidth - Number(d.querySelector('.main-svg').getAttribute('width'))) <= 2)",
            timeout=5, what="every chart to fit its column")
        rows = browser.evaluate("[...document.querySelectorAll('#status-table tbody tr')].map(r => r.innerText)")
        assert len(rows) == 2 and all("running" in r for r in rows), rows
        assert "erank" in browser.evaluate("document.getElementById('phases').innerText")
        assert "meta.enabled" in browser.evaluate("document.getElementById('config-diff').innerText")
        assert browser.evaluate("document.getElementById('verdict-section').classList.contains('hidden')")
        # The experiment's report appears: its verdict is shown above the runs, without reload.
        reported = tmp_path / "reported"
        write_report(reported, {"vanilla": {0: make_run(reported, "vanilla", 0, [5.0, 4.5, 4.2])}}, "vanilla", None)
        shutil.copyfile(reported / "summary.json", experiment / "summary.json")
        browser.wait_for("document.getElementById('verdicts').innerText.includes('Target validation loss 4.2000')",
                         timeout=10, what="the experiment's verdict")
        assert not browser.evaluate("document.getElementById('verdict-section').classList.contains('hidden')")

        # A marker that a reload would wipe, then a step far ahead of the background writer.
        browser.evaluate("window.__no_reload_marker = 42")
        stop.set()
        threads[1].join(timeout=5)
        last_dynamics = min(run.step for run in runs) // 50 * 50
        browser.wait_for(  # both runs' dynamics charts are drawn up to the last dynamics step
            "[...document.querySelectorAll('.dyn-run .chart')].length === 8 && "
            f"[...document.querySelectorAll('.dyn-run .chart')].every(d => d._fullLayout.xaxis.range[1] >= {last_dynamics})",
            timeout=10, what=f"dynamics charts to reach step {last_dynamics}")
        shown = int(browser.wait_for("Number(document.getElementById('latest-step').textContent)", 10, "a step"))
        target = max(run.step for run in runs) + 1000
        runs[0].advance(1, jump_to=target)
        browser.wait_for(f"document.getElementById('latest-step').textContent === '{target}'", timeout=15,
                         what=f"step {target} (shown before: {shown}) to appear without reload")
        browser.wait_for(  # drawn, not only held: the autoscaled x axis now reaches the new step
            f"document.getElementById('chart-loss').data.some(t => t.x.includes({target})) && "
            f"document.getElementById('chart-loss')._fullLayout.xaxis.range[1] >= {target}",
            timeout=10, what="the new step to be drawn in the loss chart")
        assert browser.evaluate("window.__no_reload_marker") == 42
        browser.evaluate("{ const s = document.getElementById('x-axis'); s.value = 'flops'; s.dispatchEvent(new Event('change')); }")
        browser.wait_for(f"document.getElementById('chart-loss')._fullLayout.xaxis.range[1] >= {target * 3.1e10 * 0.99}",
                         timeout=5, what="the loss chart to switch to FLOPs on the x axis")
        browser.evaluate("{ const s = document.getElementById('x-axis'); s.value = 'step'; s.dispatchEvent(new Event('change')); }")

        screenshot = tmp_path / "watch.png"
        browser.screenshot(screenshot)
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000
        keep = os.environ.get("METALM_WATCH_SCREENSHOT")
        if keep:
            shutil.copyfile(screenshot, keep)
    finally:
        stop.set()
        browser.close()
        server.shutdown()
        server.server_close()


def _start(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "metalm", *args], env=env, text=True, **kwargs)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_metalm_watch_follows_a_real_training_process(tmp_path, corpus_dir):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("{}")
    run = tmp_path / "run"
    overrides = tiny_overrides(corpus_dir, run, **{"train.steps": 100_000, "train.save_every": 100_000,
                                                  "train.eval_every": 20, "dynamics.every": 20})
    training = _start(["train", str(cfg), *overrides], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watch = browser = None
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").is_file() or (run / "metrics.jsonl").stat().st_size == 0:
            assert training.poll() is None, f"training exited early: {training.stderr.read()}"
            assert time.monotonic() < deadline, "training wrote no metrics within 120 s"
            time.sleep(0.2)
        watch = _start(["watch", str(run)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        banner = watch.stdout.readline()
        url = re.search(r"http://\S+", banner)
        assert url, f"metalm watch printed no URL: {banner!r}"
        browser = DevToolsPipe(CHROMIUM, tmp_path / "profile")
        browser.page("Page.enable")
        browser.page("Page.navigate", {"url": url.group(0)})
        browser.wait_for("document.querySelectorAll('#chart-loss .scatterlayer .trace').length >= 1 && "
                         "document.querySelectorAll('.dyn-run .heatmaplayer').length >= 1",
                         timeout=60, what="the loss chart and the dynamics heatmaps of the real run")
        browser.evaluate("window.__no_reload_marker = 7")
        shown = int(browser.wait_for("Number(document.getElementById('latest-step').textContent)", 10, "a step"))
        later = shown + 30
        browser.wait_for(f"Number(document.getElementById('latest-step').textContent) >= {later}", timeout=60,
                         what=f"step {later} (shown first: {shown}) to appear without reload")
        assert training.poll() is None, "the run must still be training while the page follows it"
        assert browser.evaluate("window.__no_reload_marker") == 7
        row = browser.evaluate("document.querySelector('#status-table tbody tr').innerText")
        assert "running" in row, row
        written = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        drawn = browser.evaluate("Math.max(...document.getElementById('chart-loss').data.flatMap(t => t.x))")
        assert drawn <= max(r["step"] for r in written)  # everything drawn was really written
        screenshot = tmp_path / "watch-real.png"
        browser.screenshot(screenshot)
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        if browser is not None:
            browser.close()
        for proc in (watch, training):
            if proc is not None:
                _stop(proc)
