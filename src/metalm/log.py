"""Messages of the `metalm` commands: the `metalm` logger, to stderr as `metalm: message`.

Results a user pipes (tables, JSON, `report: PATH`) are printed to stdout by the commands; progress
notes, "saved X" and warnings go through `logger`. Importing this module configures nothing;
`setup_logging` (called by `metalm.cli.main`) installs the one stderr handler.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("metalm")

LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


class _StderrHandler(logging.StreamHandler):
    """Writes to the *current* sys.stderr (so redirections made after set-up, e.g. by tests, apply)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class _Formatter(logging.Formatter):
    """`metalm: message`, `metalm: warning: message`."""

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return f"metalm: {level}{super().format(record)}"


def setup_logging(verbosity: int = 0) -> None:
    """-1 (--quiet): warnings and errors only; 0: messages; 1 (--verbose): debug details too.
    Idempotent: calling it again replaces the handler it installed."""
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    logger.addHandler(handler)
    logger.setLevel(LEVELS[max(-1, min(1, verbosity))])


def quiet_library_progress() -> None:
    """No Hugging Face progress bars (carriage-return frames) when stderr is a log file or a pipe:
    called by the CLI for its own process only (importing metalm changes nothing)."""
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # transformers and datasets read this state when they are imported
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def progress(items, total: int, what: str, unit: str = "it", every_s: float = 15.0):
    """Iterate `items` (`total` of them) showing progress on stderr: a tqdm bar on a terminal, else a
    log line `what: i/total units (elapsed s)` every `every_s` seconds (and a last one at the end if
    any was written) — a long evaluation is never silent, a short one does not fill the log."""
    import time

    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        yield from tqdm(items, total=total, desc=what, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True)
        return
    start = last = time.perf_counter()
    logged = False
    for i, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if now - last >= every_s or (i == total and logged):
            logger.info(f"{what}: {i}/{total} {unit} ({now - start:.0f} s)")
            last, logged = now, True
