"""Cost of checking a token-cache entry before it is used (DESIGN 2.9, Integrity).

Tokenizes ELTeC English (../shared/data/corpora/eltec-eng, 62 MB of text) into a fresh cache, then
times, warm (the entry in the page cache, as right after tokenization or a previous run):

- the check every open does (`token_store.load`: sizes + sha256 of 64 blocks of 64 KiB per file),
- the full check of `metalm data --verify` (sha256 of every byte),
- what every start already did before this check existed: the sources' content hash (every byte of text),
- the sources' sampled digests a run now records (to name a source that changed on resume).

The sampled check reads at most 64 × 64 KiB = 4 MiB per file, 16 MiB for an entry's four files, at
any corpus size: its cost on the 1 GB corpus of data_scale.py is the same reads, so it is measured
here and not extrapolated by size (a cold cache adds 256 random 64 KiB reads).

    python benchmarks/cache_check.py [--cache /tmp/metalm-cache-check] [--repeats 5]

writes benchmarks/results/cache_check.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from common import ELTEC, ROOT, machine, save_result

sys.path.insert(0, str(ROOT / "src"))


def timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="/tmp/metalm-cache-check")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from metalm.config import DataConfig
    from metalm.data import prepare_corpus, token_store
    from metalm.data.sources import fingerprint, resolve_files, source_samples

    cfg = DataConfig(train=str(ELTEC / "train"), validation=str(ELTEC / "validation"), vocab_size=8192)
    cached = (Path(args.cache) / "tokens").is_dir() and any((Path(args.cache) / "tokens").glob("*/info.json"))
    start = time.perf_counter()
    corpus = prepare_corpus(cfg, args.cache, progress=False)
    prepared = time.perf_counter() - start
    entry = Path(corpus.info["cache"])
    entry_bytes = sum(p.stat().st_size for p in entry.glob("*.bin"))
    sources = resolve_files(cfg.train) + resolve_files(cfg.validation)
    result = {
        "machine": machine(),
        "corpus": str(ELTEC), "text_bytes": sum(p.stat().st_size for p in sources),
        "entry_bytes": entry_bytes, "tokens": corpus.info["tokens"],
        "prepare_s": round(prepared, 2),  # tokenizer, tokenization and digests, unless the entry was cached
        "entry_was_cached": cached,
        "sampled_check_s": timed(lambda: token_store.load(entry), args.repeats),
        "full_check_s": timed(lambda: token_store.load(entry, full=True), args.repeats),
        "source_hash_s": timed(lambda: fingerprint(sources), args.repeats),
        "source_samples_s": timed(lambda: source_samples(sources), args.repeats),
        "sampled_bytes_read": sum(min(p.stat().st_size, token_store.SAMPLE_BLOCKS * token_store.SAMPLE_BLOCK_BYTES)
                                  for p in entry.glob("*.bin")),
    }
    save_result(ROOT / "benchmarks" / "results" / "cache_check.json", result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
