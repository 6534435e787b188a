"""Progress of an evaluation off a terminal: a log line every `every_s` seconds and a closing one,
nothing for work that ends sooner (a short evaluation does not fill the log)."""

from __future__ import annotations

import logging

from metalm.log import progress


def test_progress_lines_are_timed_not_counted(caplog, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    with caplog.at_level(logging.INFO, logger="metalm"):
        assert list(progress(range(30), 30, "few-shot", "episodes")) == list(range(30))
    assert not [r for r in caplog.records if "few-shot" in r.getMessage()]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="metalm"):
        list(progress(range(3), 3, "few-shot", "episodes", every_s=0.0))
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [f"few-shot: {i}/3 episodes" for i in (1, 2, 3)]
