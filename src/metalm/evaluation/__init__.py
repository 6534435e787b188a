"""Evaluation of checkpoints (DESIGN 2.8): Universal NER fine-tuning/probing (`ner`), with IOB2
reading (`iob2`, `uner_hub`), word → sub-word alignment (`ner_alignment`) and seqeval scoring
(`ner_scoring`). Submodules are imported where used, so `import metalm.evaluation` stays light."""
