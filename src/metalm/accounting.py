"""Compute accounting (DESIGN 2.5): what each step actually executed, accumulated over the run.

Every metrics row carries cumulative `tokens` (unique training tokens consumed), `fwd_tokens` and
`bwd_tokens` (token-passes), `flops` (forward matmul FLOPs + backward = 2 × forward, inner loops
included) and `time` (seconds spent in training steps), so runs compare at equal tokens, FLOPs or time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Work:
    """Work of one step (or, cumulated, of a run)."""

    tokens: int = 0
    fwd_tokens: int = 0
    bwd_tokens: int = 0
    flops: int = 0

    def __iadd__(self, other: "Work") -> "Work":
        self.tokens += other.tokens
        self.fwd_tokens += other.fwd_tokens
        self.bwd_tokens += other.bwd_tokens
        self.flops += other.flops
        return self

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def ar_work(n_tokens: int, fwd_flops_per_token: int) -> Work:
    """A next-token step over `n_tokens` new tokens: one forward and one backward pass."""
    return Work(tokens=n_tokens, fwd_tokens=n_tokens, bwd_tokens=n_tokens, flops=3 * n_tokens * fwd_flops_per_token)
