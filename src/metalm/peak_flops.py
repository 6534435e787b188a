"""Peak FLOP/s of one device, the denominator of the `mfu` column (model FLOPs utilisation).

`run.peak_tflops` wins when set. Otherwise a CUDA device's name (`torch.cuda.get_device_name`) is
looked up in a table of common accelerators' **dense** (no 2:4 sparsity) bf16 tensor-core peaks —
fp16 for the pre-Ampere cards without bf16 — at the vendor's boost clock. A device that is not in the
table, or the CPU, has no peak: the rows then carry no `mfu`, and one log line says how to set
`run.peak_tflops`.

MFU here = accounted FLOPs (DESIGN 2.5: the model's matmul FLOPs, forward + backward, inner loops
included; no activation recomputation) / seconds / (peak × processes).
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)

# (tokens that must all appear in the device name, dense TFLOP/s, basis). The first match wins, so a
# more specific row comes before a less specific one ("H100 NVL" before "H100"). Names are split into
# upper-case alphanumeric tokens, so "A10" matches neither "A100" nor "A10G", nor "L40" "L40S".
# Figures: vendor datasheets' dense tensor-core peaks (their headline figures with sparsity are
# twice these).
GPU_PEAKS: tuple[tuple[tuple[str, ...], float, str], ...] = (
    (("GH200",), 989.0, "GH200 Grace Hopper datasheet: BF16 1,979 TF with sparsity"),
    (("H200", "NVL"), 835.0, "H200 NVL datasheet: BF16 1,671 TF with sparsity"),
    (("H200",), 989.0, "H200 SXM datasheet: BF16 1,979 TF with sparsity"),
    (("H100", "NVL"), 835.0, "H100 NVL datasheet: BF16 1,671 TF with sparsity"),
    (("H100", "PCIE"), 756.0, "H100 PCIe datasheet: BF16 1,513 TF with sparsity"),
    (("H100",), 989.0, "H100 SXM datasheet: BF16 1,979 TF with sparsity (e.g. 'NVIDIA H100 80GB HBM3')"),
    (("H800",), 989.0, "H800 SXM: H100 SXM compute, BF16 1,979 TF with sparsity"),
    (("B200",), 2250.0, "HGX B200: BF16 4.5 PF with sparsity per GPU"),
    (("A100",), 312.0, "A100 datasheet (SXM and PCIe): BF16 312 TF dense, 624 with sparsity"),
    (("A800",), 312.0, "A800: A100 compute, BF16 312 TF dense"),
    (("A10G",), 70.0, "AWS A10G (no NVIDIA datasheet): BF16 70 TF dense, 140 with sparsity; the A10 "
                      "favours tensor compute, the A10G CUDA-core compute"),
    (("A10",), 125.0, "A10 datasheet: BF16 125 TF dense, 250 with sparsity"),
    (("L40S",), 362.0, "L40S datasheet: BF16 362 TF dense, 733 with sparsity"),
    (("L40",), 181.0, "L40 datasheet: BF16 181 TF dense, 362 with sparsity"),
    (("L4",), 121.0, "L4 datasheet: BF16 242 TF with sparsity"),
    (("RTX", "4090"), 165.0, "Ada whitepaper, RTX 4090: FP16/BF16 with FP32 accumulate 165.2 TF dense"),
    (("RTX", "3090"), 71.0, "Ampere GA102 whitepaper, RTX 3090: FP16/BF16 with FP32 accumulate 71 TF dense"),
    (("V100", "PCIE"), 112.0, "V100 PCIe datasheet: FP16 tensor 112 TF (no bf16)"),
    (("V100",), 125.0, "V100 SXM2 datasheet: FP16 tensor 125 TF (no bf16)"),
    (("T4",), 65.0, "T4 datasheet: FP16 tensor 65 TF (no bf16)"),
    (("MI300X",), 1307.0, "AMD Instinct MI300X datasheet: BF16 1,307.4 TF dense, 2,614.9 with sparsity"),
)


def _tokens(name: str) -> set[str]:
    return set(re.findall(r"[A-Z0-9]+", name.upper()))


def gpu_peak_tflops(device_name: str) -> float | None:
    """The dense bf16 (fp16 before Ampere) peak TFLOP/s of the GPU named `device_name`, or None."""
    tokens = _tokens(device_name)
    for required, tflops, _ in GPU_PEAKS:
        if tokens.issuperset(required):
            return tflops
    return None


def peak_tflops(configured: float | None, device) -> float | None:
    """Peak TFLOP/s of one device of the run: `run.peak_tflops` if set, else the table's figure for a
    CUDA device; None (no `mfu`) otherwise, said once in the log."""
    if configured is not None:
        return float(configured)
    if device.type == "cuda":
        import torch

        name = torch.cuda.get_device_name(device)
        found = gpu_peak_tflops(name)
        if found is not None:
            log.info("mfu: peak %.0f TFLOP/s per device (%s, dense bf16; set run.peak_tflops to override)",
                     found, name)
            return found
        log.info("mfu: no peak TFLOP/s known for %s; set run.peak_tflops (the device's dense bf16 peak) for an "
                 "mfu column", name)
        return None
    log.debug("mfu: no peak TFLOP/s for a %s run; set run.peak_tflops for an mfu column", device.type)
    return None
