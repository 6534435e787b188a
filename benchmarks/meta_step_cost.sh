#!/usr/bin/env bash
# Cost of a head-only meta step (10 inner steps) against an AR step over the same tokens, on a CPU
# preset, for both SMLMT variants. Results: benchmarks/results/meta_step_cost-*.json
# Usage: bash benchmarks/meta_step_cost.sh [DATA_DIR]   (default: the shared English corpus)
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data/corpora/eltec-eng}"
common=(configs/smoke.yaml "data.train=$data/train/train-00.txt" "data.validation=$data/validation"
        data.vocab_size=8192 meta.enabled=true meta.inner_params=head meta.inner_steps=10 meta.episodes_per_step=1
        run.threads=2 run.progress=false)
python -m metalm bench "${common[@]}" meta.smlmt_variant=token --repeats 9 --out benchmarks/results/meta_step_cost-token.json
python -m metalm bench "${common[@]}" meta.smlmt_variant=sentence meta.pool=mask --repeats 9 --out benchmarks/results/meta_step_cost-sentence.json
