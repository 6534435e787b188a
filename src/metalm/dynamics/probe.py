"""The dynamics rows of one model state on the fixed probe batch (DESIGN 2.7).

One call computes, as requested by `groups`: effective rank and PER of every layer's output
activations, of every weight matrix and of every weight's gradient of the next-token loss on the
probe batch, and the entropy of every attention head. It leaves training undisturbed: parameter
`.grad` untouched (gradients via `torch.autograd.grad`), train/eval mode and attention kernel
restored, no global RNG drawn, autocast off (the same numbers on the fly and post hoc).

Row formats (read by the live view and the plots):
  {"step", "group": "activations"|"weights"|"gradients", "layer", "component", "erank", "per", "shape"}
  {"step", "group": "attention", "layer", "head", "entropy", "entropy_norm"}
Activations: layer −1 component "embed" (embedding output), layers 0..n−1 component "output"
(decoder-layer outputs), layer n component "output" (final-norm output, the LM head's input).
Weights/gradients: layer −1 "embed", layers 0..n−1 "q"|"k"|"v"|"o"|"gate"|"up"|"down", layer n
"lm_head". A non-finite matrix (diverged run) gets erank/per null.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import torch

from .attention_entropy import attention_entropy_by_layer
from .config import ALL_GROUPS
from .effective_rank import effective_rank_from_singular_values
from .layers import decoder_layers, final_norm, weight_matrices

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Stacks of same-shaped matrices go to one batched SVD call, up to this many float64 bytes.
_SVD_BATCH_BYTES = 256 * 2**20


def _spectra(matrices: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
    """Float64 singular values of each matrix (None if it holds inf/nan), same-shaped ones batched."""
    result: list[torch.Tensor | None] = [None] * len(matrices)
    by_shape: dict[tuple, list[int]] = {}
    for i, matrix in enumerate(matrices):
        if bool(torch.isfinite(matrix).all()):
            by_shape.setdefault((tuple(matrix.shape), matrix.device), []).append(i)
    for (shape, _), indices in by_shape.items():
        per_batch = max(1, _SVD_BATCH_BYTES // (8 * shape[0] * shape[1]))
        for start in range(0, len(indices), per_batch):
            chunk = indices[start : start + per_batch]
            stack = torch.stack([matrices[i].detach().to(torch.float64) for i in chunk])
            for i, sigma in zip(chunk, torch.linalg.svdvals(stack)):
                result[i] = sigma
    return result


def _finite(value: torch.Tensor | float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _rank_rows(step: int, group: str, entries: Sequence[tuple[int, str, torch.Tensor]]) -> list[dict]:
    rows = []
    for (layer, component, matrix), sigma in zip(entries, _spectra([m for _, _, m in entries])):
        erank = None if sigma is None else _finite(effective_rank_from_singular_values(sigma))
        rows.append(
            {
                "step": step,
                "group": group,
                "layer": layer,
                "component": component,
                "erank": erank,
                "per": None if erank is None else erank / min(matrix.shape),
                "shape": list(matrix.shape),
            }
        )
    return rows


def _activation_hooks(model: PreTrainedModel, store: dict[tuple[int, str], torch.Tensor]) -> list:
    """Forward hooks recording (tokens × d) outputs of the embedding, each layer and the final norm."""

    def keep(key):
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            store[key] = hidden.detach().reshape(-1, hidden.shape[-1])

        return hook

    layers = decoder_layers(model)
    modules = [((-1, "embed"), model.get_input_embeddings())]
    modules += [((i, "output"), layer) for i, layer in enumerate(layers)]
    norm = final_norm(model)
    if norm is not None:
        modules.append(((len(layers), "output"), norm))
    return [module.register_forward_hook(keep(key)) for key, module in modules]


def _forward(model, input_ids, matrices, want_activations: bool, want_gradients: bool):
    """One sdpa forward (with a backward when gradients are wanted): activations and gradients."""
    activations: dict[tuple[int, str], torch.Tensor] = {}
    handles = _activation_hooks(model, activations) if want_activations else []
    try:
        if want_gradients:
            with torch.enable_grad():
                loss = model(input_ids=input_ids, labels=input_ids, use_cache=False).loss
                unique = list({id(p): p for _, _, p in matrices}.values())
                grads = torch.autograd.grad(loss, unique, allow_unused=True)
            by_id = {id(p): (torch.zeros_like(p) if g is None else g) for p, g in zip(unique, grads)}
            gradients = [(layer, comp, by_id[id(p)]) for layer, comp, p in matrices]
        else:
            with torch.no_grad():
                model(input_ids=input_ids, use_cache=False)
            gradients = []
    finally:
        for handle in handles:
            handle.remove()
    return [(layer, comp, activations[(layer, comp)]) for layer, comp in sorted(activations)], gradients


def dynamics_rows(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    step: int,
    groups: Iterable[str] = ALL_GROUPS,
) -> list[dict]:
    """All dynamics rows of `model` at optimizer step `step` on the probe batch `input_ids`
    ([sequences, tokens], token ids). Pass the bare model (not a DDP/compiled wrapper)."""
    groups = set(groups)
    unknown = groups - set(ALL_GROUPS)
    if unknown:
        raise ValueError(f"unknown dynamics groups {sorted(unknown)}; choose from {list(ALL_GROUPS)}")
    if input_ids.ndim != 2 or input_ids.shape[1] < 2:
        raise ValueError(f"probe input_ids must be [sequences, tokens ≥ 2], got {tuple(input_ids.shape)}")
    device = next(model.parameters()).device
    input_ids = input_ids.to(device=device, dtype=torch.long)
    was_training = model.training
    model.eval()
    rows: list[dict] = []
    try:
        with torch.autocast(device_type=device.type, enabled=False):
            # Frozen weights have no gradient row (nothing trains them).
            trainable = [entry for entry in weight_matrices(model) if entry[2].requires_grad]
            want_gradients = "gradients" in groups and bool(trainable)
            gradients: list = []
            if "activations" in groups or want_gradients:
                activations, gradients = _forward(model, input_ids, trainable, "activations" in groups, want_gradients)
                if "activations" in groups:
                    rows += _rank_rows(step, "activations", activations)
            if "weights" in groups:
                rows += _rank_rows(step, "weights", [(layer, c, p.detach()) for layer, c, p in weight_matrices(model)])
            if "gradients" in groups:
                rows += _rank_rows(step, "gradients", gradients)
            if "attention" in groups:
                for layer, (entropy, entropy_norm) in enumerate(attention_entropy_by_layer(model, input_ids)):
                    rows += [
                        {
                            "step": step,
                            "group": "attention",
                            "layer": layer,
                            "head": head,
                            "entropy": _finite(entropy[head]),
                            "entropy_norm": _finite(entropy_norm[head]),
                        }
                        for head in range(entropy.shape[0])
                    ]
    finally:
        model.train(was_training)
    return rows


def probe_batch(cfg, train_seq_len: int, validation) -> torch.Tensor:
    """The fixed held-out batch of the probes: `cfg.probe_sequences` sequences spread evenly over
    the validation tokens (`validation`, a TokenArray), the same for every run on the same data.
    Training saves it only when it records dynamics (`every` > 0); post hoc analysis of another run
    rebuilds it from the run's config."""
    from ..data import PackedSequences, evenly_spaced
    from .config import probe_shape

    n, length = probe_shape(cfg, train_seq_len)
    seqs = PackedSequences(validation, length - 1, "data.validation (dynamics probe)")
    return torch.from_numpy(seqs.gather(evenly_spaced(len(seqs), n)))
