"""What a measurement ran on: the processor's model, its cores, torch's threads, the device.

Speeds measured on different machines are not comparable; benchmark records carry this label so
that a sweep run in parts (or on a Ray cluster) says which samples ran where.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_label(device: str | None = None) -> str:
    """One line naming where a model ran, e.g. "AMD EPYC, 2 cores, 2 torch threads"."""
    import torch
    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))} (CUDA)"
    return f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def machine_facts() -> dict:
    """The label's parts and the software versions, for a benchmark file's header."""
    import time

    import torch
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": cpu_model(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
