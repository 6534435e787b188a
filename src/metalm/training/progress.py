"""Progress display: a tqdm bar on a terminal, one log line per logged row otherwise (a log file
never fills with carriage-return frames)."""

from __future__ import annotations

import logging
import sys

from tqdm.auto import tqdm

log = logging.getLogger("metalm.train")


def _summary(row: dict) -> dict[str, str]:
    shown = {}
    if row.get("loss") is not None:
        shown["loss"] = f"{row['loss']:.3f}"
    if row.get("meta_loss") is not None:
        shown["meta_loss"] = f"{row['meta_loss']:.3f}"
    if row.get("query_acc") is not None:
        shown["q_acc"] = f"{row['query_acc']:.2f}"
    if row.get("val_loss") is not None:
        shown["val"] = f"{row['val_loss']:.3f}"
    if row.get("tokens_per_s"):
        shown["tok_s"] = f"{row['tokens_per_s']:,.0f}"
    return shown


class Progress:
    def __init__(self, total: int, initial: int, name: str, enabled: bool, stream=None):
        stream = stream if stream is not None else sys.stderr
        self.total = total
        self.enabled = enabled
        self.bar = None
        if enabled and stream.isatty():
            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, desc=name, file=stream)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def logged(self, row: dict) -> None:
        """Show a freshly logged row: in the bar's postfix, or as one line."""
        if not self.enabled:
            return
        shown = _summary(row)
        if self.bar is not None:
            self.bar.set_postfix(**shown, refresh=False)
        else:
            log.info("step %d/%d  %s", row["step"], self.total, "  ".join(f"{k} {v}" for k, v in shown.items()))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
