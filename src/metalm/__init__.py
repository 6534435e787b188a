"""metalm: meta-learned pretraining of small Llama-style language models.

Trains vanilla and meta-learned (MAML-family, SMLMT / LM tasks) models under identical data and
compute accounting, and reports whether meta-learning reached the same loss sooner.
"""

__version__ = "0.1.0"
