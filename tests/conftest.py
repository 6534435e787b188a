"""Shared fixtures: an isolated metalm cache and a small corpus (helpers: `helpers.py`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from helpers import make_corpus

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    os.environ["METALM_CACHE"] = str(tmp_path_factory.mktemp("metalm-cache"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield



@pytest.fixture
def corpus_dir(tmp_path) -> Path:
    return make_corpus(tmp_path / "corpus")
