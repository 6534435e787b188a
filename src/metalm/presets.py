"""The named model sizes (`model.preset`), torch-free so that loading a config imports no torch or transformers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """Architecture of a named model size. `vocab_size` is nominal: the tokenizer's wins."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    max_position_embeddings: int
    vocab_size: int
    note: str = ""


def _paper(d: int, note: str) -> Preset:
    # Africa et al. (2025) / pico-decoder family: 12 layers, 12 heads, 4 KV heads, FFN 4·d,
    # context 2048, 50k vocabulary.
    return Preset(d, 12, 12, 4, 4 * d, 2048, 50304, note)


PRESETS: dict[str, Preset] = {
    # CPU-sized presets for tests and smoke runs.
    "nano": Preset(64, 2, 4, 2, 256, 256, 2048, "unit tests (~0.4M params at vocab 2048)"),
    "micro": Preset(128, 4, 4, 2, 512, 512, 4096, "smoke runs on a laptop CPU (~2.0M params)"),
    "mini": Preset(256, 6, 8, 4, 1024, 512, 8192, "real-corpus CPU runs (~10.1M params)"),
    # The paper's four sizes.
    "tiny": _paper(96, "paper 'tiny', ~11M params"),
    "small": _paper(384, "paper 'small', ~65M params"),
    "medium": _paper(768, "paper 'medium', ~181M params"),
    "large": _paper(1536, "paper 'large', ~570M params"),
}
