"""A process's own peak resident memory, for the benchmarks' measuring children.

``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is no good for this: Linux keeps
the largest RSS a process ever had across ``fork`` and ``exec`` in that figure,
so a child started by a 12 GB parent reports 12 GB whatever it does itself.
``VmHWM`` in ``/proc/self/status`` is the high-water mark of the process's
current address space, which ``exec`` replaces: it is the child's own peak.
"""

from __future__ import annotations

STATUS = "/proc/self/status"


def own_peak_rss_mb(status: str = STATUS) -> float:
    """Peak resident memory (MiB) of this process since its last ``exec`` (``VmHWM``).

    Raises:
        RuntimeError: the status file has no ``VmHWM`` line (not Linux).
    """
    with open(status, encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # the kernel writes kB
    raise RuntimeError(f"{status} has no VmHWM line: peak memory is measured on Linux only")


__all__ = ["own_peak_rss_mb"]
