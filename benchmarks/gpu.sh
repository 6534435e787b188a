#!/usr/bin/env bash
# Training-step throughput on one CUDA GPU: tokens/s, MFU and the meta/AR step-time ratio of the
# tiny, small, medium and large presets in bf16, with and without run.compile, in under 10 minutes
# (demo data, generated offline). Result: benchmarks/results/gpu-<gpu name>-<date>.json
#
# Usage: bash benchmarks/gpu.sh [--presets tiny small ...] [--compile off on] [--steps N] [--budget-s S]
#                               [--peak-tflops T] [--out PATH]
#        bash benchmarks/gpu.sh --device cpu --quick      (a seconds-long check of the script, no GPU)
# Python: $PYTHON, default python3. When packages are missing (a lent GPU machine's image has no
# pydantic) and benchmarks/wheels/ holds wheels, they are installed from there into a temporary
# folder (nothing of the machine's own is touched): fetch them with the command in
# benchmarks/README.md. What is still missing is named in one line (exit 2). Fails with a clear message (exit 2) when no CUDA device is
# present. Details: benchmarks/gpu.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false
missing() {  # the packages the benchmark imports that this Python cannot import, comma-separated (with why,
             # when not simply absent: a dependency of theirs missing, a version too old…)
  "$PY" -c '
import importlib, sys
bad = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as exc:
        absent = isinstance(exc, ModuleNotFoundError) and exc.name == name
        bad.append(name if absent else f"{name} ({type(exc).__name__}: {(str(exc).splitlines() or [str()])[0][:160]})")
print(", ".join(bad))' \
    torch transformers tokenizers safetensors numpy scipy yaml tqdm pydantic pydantic_core annotated_types \
    typing_inspection typing_extensions
}
lacking="$(missing)"
if [[ -n "$lacking" ]] && compgen -G "benchmarks/wheels/*.whl" >/dev/null; then
  site="$(mktemp -d "${TMPDIR:-/tmp}/metalm-wheels.XXXXXX")"  # nothing of the machine's own is touched
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" benchmarks/wheels/*.whl \
    || echo "benchmarks/gpu.sh: the wheels in benchmarks/wheels/ do not install for this Python" >&2
  export PYTHONPATH="$PYTHONPATH:$site"
  lacking="$(missing)"
fi
if [[ -n "$lacking" ]]; then
  echo "benchmarks/gpu.sh: missing Python packages: $lacking ($("$PY" -V 2>&1)); put their wheels into" \
       "benchmarks/wheels/ (the command in benchmarks/README.md downloads benchmarks/device-wheels.txt)" >&2
  exit 2
fi
exec "$PY" benchmarks/gpu.py "$@"
