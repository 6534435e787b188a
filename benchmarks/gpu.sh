#!/usr/bin/env bash
# Training-step throughput on one CUDA GPU: tokens/s, MFU and the meta/AR step-time ratio of the
# tiny, small, medium and large presets in bf16, with and without run.compile, in under 10 minutes
# (demo data, generated offline). Result: benchmarks/results/gpu-<gpu name>-<date>.json
#
# Usage: bash benchmarks/gpu.sh [--presets tiny small ...] [--compile off on] [--steps N] [--budget-s S]
#                               [--peak-tflops T] [--out PATH]
#        bash benchmarks/gpu.sh --device cpu --quick      (a seconds-long check of the script, no GPU)
# Fails with a clear message (exit 2) when no CUDA device is present. Details: benchmarks/gpu.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false
exec "${PYTHON:-python}" benchmarks/gpu.py "$@"
