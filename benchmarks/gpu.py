"""GPU throughput of the training step: tokens/s, MFU and the meta/AR step-time ratio per preset, in
bf16, with and without `run.compile`. Run through `bash benchmarks/gpu.sh` (see there).

For each (compile, preset) a Trainer is built from the same config a run would use (demo data,
BPE vocabulary 8192, token-SMLMT meta-learning in the dense layout: the meta step's episodes are
read from the very rows the AR step trains on, so both steps consume the same tokens), and its own
steps, exactly as the training loop runs them:
  - the AR step = `Trainer.step(step, kind="ar")`: the compiled loss when compile is on, fused AdamW,
    the device-side non-finite check;
  - the meta step = `Trainer.step(step, kind="meta")`: episodes, `MetaStep.run` under the trainer's
    autocast, `reduce_stats` (the global statistics and work, left on the device), the gradients'
    finishing, the same optimizer step (always eager: meta paths are not compiled);
are timed over blocks of steps between two device synchronisations (the loop itself syncs only at
logged rows). MFU = accounted FLOPs (DESIGN 2.5) / seconds / peak (`metalm.peak_flops`). One extra
step of each kind runs under `torch.cuda.set_sync_debug_mode("warn")`: the host syncs it still
makes are counted and listed (only the sync reports: not the mode's own prototype notice, nor other
warnings). Configurations run eager first, then compiled, smallest first; once `--budget-s` is
spent the rest are recorded as skipped; one that fails (out of memory, a compiler missing, a
diverged step…) is recorded under `failed` with its reason and the others go on. The JSON is
rewritten after every configuration, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import platform
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

from common import ROOT, save_result

# (sequences, seq_len) per step, sized for one 80–140 GB GPU in bf16 (activations dominate; the
# fp32 logits of a 8192-word vocabulary are 4 GB per 131k tokens).
GPU_SHAPES = {"tiny": (64, 2048), "small": (64, 2048), "medium": (32, 2048), "large": (16, 2048)}
QUICK_SHAPES = {"nano": (4, 64), "micro": (4, 64)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="benchmarks/gpu.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cuda (the benchmark); cpu only with --quick, to check the script itself")
    parser.add_argument("--quick", action="store_true", help="nano preset, a few steps, tiny batches (a smoke test)")
    parser.add_argument("--presets", nargs="+", default=None, help="default: tiny small medium large (--quick: nano)")
    parser.add_argument("--compile", nargs="+", default=None, choices=["off", "on"],
                        help="default: off on (--quick: off)")
    parser.add_argument("--steps", type=int, default=None, help="timed AR steps per configuration (default 10; quick 2)")
    parser.add_argument("--meta-steps", type=int, default=None, help="timed meta steps (default 5; quick 1)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; quick 1)")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="start no configuration after this many seconds (one may still be running)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak of the device (default: the table)")
    parser.add_argument("--data", default="demo", help="demo (default, generated offline) or a directory holding "
                        "train/ and validation/")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/gpu-<gpu name>-<date>.json")
    args = parser.parse_args(argv)
    if args.device == "cpu" and not args.quick:
        parser.error("--device cpu is only a smoke test of the script: add --quick")
    args.presets = args.presets or (["nano"] if args.quick else list(GPU_SHAPES))
    args.compile = args.compile or (["off"] if args.quick else ["off", "on"])
    args.steps = args.steps or (2 if args.quick else 10)
    args.meta_steps = args.meta_steps or (1 if args.quick else 5)
    args.warmup = args.warmup or (1 if args.quick else 3)
    return args


def shape_of(preset: str, quick: bool) -> tuple[int, int]:
    table = QUICK_SHAPES if quick else GPU_SHAPES
    return table.get(preset, (4, 64) if quick else (16, 2048))


def overrides(preset: str, compiled: bool, device: str, quick: bool, run_dir: Path, data: str = "demo") -> list[str]:
    batch, seq_len = shape_of(preset, quick)
    where = ["data.train=demo"] if data == "demo" else [f"data.train={Path(data) / 'train'}",
                                                        f"data.validation={Path(data) / 'validation'}"]
    return [
        *where, f"data.vocab_size={512 if quick else 8192}", f"run.device={device}",
        f"run.precision={'fp32' if device == 'cpu' else 'bf16'}", f"run.compile={str(compiled).lower()}",
        "run.progress=false", f"run.dir={run_dir}", f"model.preset={preset}",
        f"train.batch_size={batch}", f"train.seq_len={seq_len}", "train.grad_accum=1", "train.steps=1000",
        "train.warmup_steps=10", "train.eval_batches=1", "meta.enabled=true", "meta.smlmt_variant=token",
        "meta.layout=dense", f"meta.n_way={4 if quick else 32}", "meta.k_shot=4", "meta.q_query=1",
        "meta.inner_params=head", "meta.inner_steps=10", "meta.algorithm=fomaml",
        *(["run.threads=1"] if device == "cpu" else []),
        *(["meta.band_min_count=5", "meta.band_skip_top=10"] if quick else []),  # a small corpus's candidates
    ]


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


SYNC_REPORT = "called a synchronizing CUDA operation"  # what CUDA's sync debug mode warns at each sync


def sync_reports(caught) -> list[str]:
    """`file:line: message` of each host-sync report among the caught warnings (the sync debug mode's
    "prototype feature" notice and unrelated warnings left out)."""
    return [f"{w.filename}:{w.lineno}: {str(w.message).splitlines()[0]}" for w in caught
            if SYNC_REPORT in str(w.message)]


def host_syncs(device, fn) -> list[str]:
    """The host syncs CUDA's sync debug mode reports while `fn()` runs (empty on the CPU)."""
    import torch

    if device.type != "cuda":
        fn()
        return []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")  # reported as the host reaches a synchronising call
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sync(device)
    return sync_reports(caught)


def measure(preset: str, compiled: bool, args, peak: float | None) -> dict:
    import torch

    from metalm.config import load_config
    from metalm.trainer import Trainer

    run_dir = Path(tempfile.mkdtemp(prefix=f"gpu-bench-{preset}-"))
    cfg = load_config(None, overrides(preset, compiled, args.device, args.quick, run_dir, args.data))
    trainer = Trainer.build(cfg)
    device, model = trainer.device, trainer.model
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step = 0

    def run_step(kind: str):
        """The next optimizer step of `kind` ("ar" or "meta"), as the training loop takes it."""
        nonlocal step
        work = trainer.step(step, kind=kind).work
        step += 1
        return work

    def ar_step():
        return run_step("ar")

    def meta_step():
        return run_step("meta")

    def timed(fn, n: int) -> tuple[float, object]:
        sync(device)
        start = time.perf_counter()
        works = [fn() for _ in range(n)]
        sync(device)
        return (time.perf_counter() - start) / n, works[-1]

    start = time.perf_counter()
    first, _ = timed(ar_step, 1)  # includes compiling, when on
    for _ in range(args.warmup - 1):
        ar_step()
    ar_s, ar_work = timed(ar_step, args.steps)
    ar_syncs = host_syncs(device, ar_step)
    for _ in range(args.warmup):
        meta_step()
    meta_s, meta_work = timed(meta_step, args.meta_steps)
    meta_syncs = host_syncs(device, meta_step)
    trainer.check_finite()  # the deferred non-finite check, as at a logged row

    def kind(seconds: float, work) -> dict:
        out = {"seconds_per_step": seconds, "tokens_per_step": work.tokens, "tokens_per_s": work.tokens / seconds,
               "flops_per_step": work.flops, "tflops_per_s": work.flops / seconds / 1e12}
        out["mfu"] = work.flops / seconds / (peak * 1e12) if peak else None
        return out

    batch, seq_len = shape_of(preset, args.quick)
    result = {
        "preset": preset, "compile": compiled, "parameters": sum(p.numel() for p in model.parameters()),
        "batch": batch, "seq_len": seq_len, "vocab": model.config.vocab_size,
        "first_step_s": first, "setup_and_measure_s": time.perf_counter() - start,
        "ar": kind(ar_s, ar_work), "meta": kind(meta_s, meta_work), "meta_over_ar_step_time": meta_s / ar_s,
        "host_syncs": {"ar_step": ar_syncs, "meta_step": meta_syncs},
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        # what the steps ran with: fused AdamW, and the deferred check's decision handed to it as `found_inf`
        "fused_adamw": bool(trainer.optimizer.param_groups[0].get("fused")),
        "deferred_nonfinite_check": hasattr(trainer.optimizer, "found_inf"),
    }
    return result


def release() -> None:
    """Free a finished configuration's model and compiled code before the next one."""
    import torch

    torch._dynamo.reset()  # compiled code (and its references); no recompile limit carried over
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def configuration(label: str, preset: str, compiled: bool, args, peak: float | None, report: dict) -> None:
    """Measure one configuration into `report`: its results, or its failure with the reason (any
    exception: out of memory, a compiler missing for compile=on, a diverged step…), so the other
    configurations still run."""
    import torch

    try:
        r = measure(preset, compiled, args, peak)
    except Exception as exc:  # every failure is a result of this configuration
        reason = "out of memory" if isinstance(exc, torch.cuda.OutOfMemoryError) else type(exc).__name__
        first = (str(exc).strip().splitlines() or [""])[0][:500]
        report["failed"].append({"configuration": label, "reason": f"{reason}: {first}" if first else reason})
        print(f"{label}: failed: {report['failed'][-1]['reason']}", flush=True)
        return
    finally:
        release()
    report["results"].append(r)
    ar = r["ar"]
    mfu = f", MFU {100 * ar['mfu']:.1f}%" if ar["mfu"] is not None else ""
    print(f"{label}: AR {ar['tokens_per_s']:,.0f} tokens/s{mfu}; meta/AR step time "
          f"{r['meta_over_ar_step_time']:.2f}; first step {r['first_step_s']:.1f} s; host syncs per AR step "
          f"{len(r['host_syncs']['ar_step'])}, per meta step {len(r['host_syncs']['meta_step'])}", flush=True)


def default_out(device_name: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")
    return ROOT / "benchmarks" / "results" / f"gpu-{slug}-{datetime.date.today().isoformat()}.json"


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"benchmarks/gpu.sh: no CUDA device available (torch {torch.__version__}, built with CUDA "
              f"{torch.version.cuda or 'none'}); this benchmark needs a GPU. To check the script on a CPU: "
              "bash benchmarks/gpu.sh --device cpu --quick", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT / "src"))  # the working tree's metalm, installed or not
    from metalm.peak_flops import peak_tflops

    device = torch.device(args.device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{platform.machine()}"
    peak = args.peak_tflops or peak_tflops(None, device)
    out = Path(args.out) if args.out else default_out(device_name)
    report = {
        "benchmark": "training step throughput: tokens/s, MFU, meta/AR step time, bf16, compile off/on",
        "date": datetime.date.today().isoformat(), "device": device_name, "peak_tflops": peak,
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(), "quick": args.quick, "results": [], "failed": [], "skipped": [],
    }
    started = time.perf_counter()
    for compiled in (c == "on" for c in args.compile):
        for preset in args.presets:
            label = f"{preset} compile={'on' if compiled else 'off'}"
            if time.perf_counter() - started > args.budget_s:
                report["skipped"].append(label)
                print(f"{label}: skipped (--budget-s {args.budget_s:.0f} spent)", flush=True)
            else:
                configuration(label, preset, compiled, args, peak, report)
            report["elapsed_s"] = time.perf_counter() - started
            save_result(out, report)  # after every configuration: a run cut short keeps what it measured
    print(f"→ {out}")
    return 0 if report["results"] or not report["failed"] else 1  # every configuration failed: exit 1


if __name__ == "__main__":
    sys.exit(main())
