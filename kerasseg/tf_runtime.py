"""TensorFlow runtime settings the ``kerasseg`` command chooses before TensorFlow loads.

oneDNN: TensorFlow's x86 builds use oneDNN kernels by default only on CPUs with
AVX512_VNNI, AVX512_BF16 or AMX; elsewhere (e.g. AVX2-only AMD EPYC) they fall
back to Eigen kernels that are much slower for the convolutions segmentation
models are made of. Measured on a 2-core AVX2 EPYC, one training step,
TensorFlow 2.21: 3D U-Net (8 filters, 2 x 40x56x40) 3.7 s -> 1.28 s, DeepLabv3+
(MobileNetV2, 4 x 256x256) 28.4 s -> 10.3 s, 2D U-Net unchanged. So the command
turns oneDNN on unless the user set ``TF_ENABLE_ONEDNN_OPTS`` themselves.
Not reproduced since: ``benchmarks/bench_training.py`` (``train_onednn_speedup_<model>``,
whole processes, 256x256, batch 4, on the same kind of machine under load) measured
0.93x for U-Net and 1.00x for DeepLabv3+ on 2026-12-03, so the setting is kept
as harmless but its gain is unconfirmed.
Measured again on a 2-core AVX512_BF16 EPYC (where TensorFlow turns oneDNN on by
itself), ``train_onednn_speedup_<model>`` 2026-12-07: see benchmarks/RESULTS.md.
Library users (``import kerasseg``) decide for themselves: nothing happens at import.

bfloat16: :func:`cpu_has_bf16` tells whether this CPU computes bfloat16 natively
(AVX512_BF16 or AMX-BF16); ``training.mixed_precision: auto`` trains in
``mixed_bfloat16`` only there, since elsewhere TensorFlow emulates it (several
times slower than float32).
"""

from __future__ import annotations

import os
import sys

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def prefer_onednn() -> bool:
    """Set ``TF_ENABLE_ONEDNN_OPTS=1`` unless it is set or TensorFlow is already loaded.

    Returns:
        True when this call set it (it takes effect only before TensorFlow is imported).
    """
    if ONEDNN_VARIABLE in os.environ or "tensorflow" in sys.modules:
        return False
    os.environ[ONEDNN_VARIABLE] = "1"
    return True


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU flags list ``avx512_bf16`` or ``amx_bf16`` (Linux; ``False`` elsewhere)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[-1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


__all__ = ["ONEDNN_VARIABLE", "cpu_has_bf16", "prefer_onednn"]
