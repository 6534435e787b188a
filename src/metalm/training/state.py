"""What a run has done so far — the counters a checkpoint must restore for an exact resume."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..accounting import Work


@dataclass
class TrainState:
    step: int = 0  # optimizer steps taken
    work: Work = field(default_factory=Work)  # cumulative accounted work (DESIGN 2.5)
    time: float = 0.0  # seconds spent in training steps (evaluation, dynamics and saving excluded)
    meta_steps: int = 0  # optimizer steps that included meta-learning
    skipped_steps: int = 0  # steps dropped for a non-finite loss or gradient (train.on_nonfinite=skip)
    skipped_in_a_row: int = 0  # the current run of them

    def advance(self, kind: str, work: Work, seconds: float) -> None:
        self.step += 1
        self.work += work
        self.time += seconds
        self.meta_steps += kind != "ar"

    def state_dict(self) -> dict:
        state = {"step": self.step, "work": self.work.as_dict(), "time": self.time, "meta_steps": self.meta_steps}
        if self.skipped_steps:  # only runs that skipped a step carry the skip counters
            state.update(skipped_steps=self.skipped_steps, skipped_in_a_row=self.skipped_in_a_row)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore from a checkpoint's counters (keys written by older versions are ignored)."""
        self.step = int(state["step"])
        self.work = Work(**{k: int(v) for k, v in state["work"].items()})
        self.time = float(state["time"])
        self.meta_steps = int(state.get("meta_steps", 0))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.skipped_in_a_row = int(state.get("skipped_in_a_row", 0))
