"""What the planner knows about this machine: the device, its memory, the CPU cores."""

from __future__ import annotations

import dataclasses
import os

from kerasseg.tf_runtime import cpu_has_bf16


@dataclasses.dataclass(frozen=True)
class Hardware:
    """The machine a plan is made for.

    Attributes:
        device: ``"GPU"`` when TensorFlow sees one, else ``"CPU"``.
        memory_bytes: memory a training run may use: on CPU the host's available
            memory (``MemAvailable``); on GPU 16 GiB unless given (TensorFlow
            does not report a GPU's total memory).
        cpu_cores: cores this process may run on.
        description: one line for the plan table.
        cpu_bf16: the CPU computes bfloat16 natively (AVX512_BF16 or AMX-BF16); without
            it ``mixed_bfloat16`` is emulated and several times slower than float32.
    """

    device: str
    memory_bytes: int
    cpu_cores: int
    description: str
    cpu_bf16: bool = False

    @property
    def gpu(self) -> bool:
        return self.device == "GPU"


def _available_host_memory() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def detect_hardware(*, memory_gb: float | None = None) -> Hardware:
    """Describe this machine; ``memory_gb`` overrides the memory figure (e.g. a shared GPU)."""
    import tensorflow as tf

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        device = "GPU"
        memory = 16 << 30
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
        description = f"{len(gpus)} GPU(s), {name}"
        if memory_gb is None:
            description += " (memory assumed 16 GiB; --memory-gb sets it)"
    else:
        device = "CPU"
        memory = _available_host_memory()
        description = f"CPU only, {cores} core(s), {memory / 2**30:.1f} GiB available" + (
            ", native bfloat16" if cpu_has_bf16() else "")
    if memory_gb is not None:
        memory = int(memory_gb * 2**30)
        description += f", planning for {memory_gb:g} GiB"
    return Hardware(device=device, memory_bytes=int(memory), cpu_cores=int(cores), description=description,
                    cpu_bf16=cpu_has_bf16())


__all__ = ["Hardware", "cpu_has_bf16", "detect_hardware"]
