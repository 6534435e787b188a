"""Effective rank (Roy & Vetterli 2007) of a matrix: how many directions its spectrum really uses."""

from __future__ import annotations

import torch


def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """Singular values in float64 (float32 SVD loses the small ones that the entropy still counts)."""
    if matrix.ndim != 2:
        raise ValueError(f"effective rank needs a 2-D matrix, got shape {tuple(matrix.shape)}")
    return torch.linalg.svdvals(matrix.detach().to(torch.float64))


def effective_rank_from_singular_values(sigma: torch.Tensor) -> float:
    """exp of the Shannon entropy of p = σ/Σσ; zero singular values contribute nothing, a zero matrix
    has effective rank 0."""
    sigma = sigma.to(torch.float64).clamp_min(0)
    total = sigma.sum()
    if not torch.isfinite(total):
        return float("nan")
    if total <= 0:
        return 0.0
    p = sigma / total
    entropy = -torch.special.xlogy(p, p).sum()
    return float(torch.exp(entropy))


def effective_rank(matrix: torch.Tensor) -> float:
    """erank(M) = exp(−Σ pᵢ log pᵢ), pᵢ = σᵢ/Σσ, in [1, min(rows, cols)] (0 for the zero matrix)."""
    return effective_rank_from_singular_values(singular_values(matrix))


def proportional_effective_rank(matrix: torch.Tensor) -> float:
    """PER = erank / min(rows, cols), in (0, 1] (0 for the zero matrix); comparable across shapes."""
    return effective_rank(matrix) / min(matrix.shape)
