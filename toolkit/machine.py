"""Facts about the machine a measurement ran on, for manifests and benchmark reports."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), or what ``platform`` knows."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_facts() -> dict[str, Any]:
    """CPU, cores, Python and the versions of the libraries that shape the figures."""
    import numpy
    import onnx
    import onnxruntime
    import torch

    from toolkit import __version__

    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "toolkit": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "numpy": numpy.__version__,
        "cuda_gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
