"""The machine and package facts every bench.json and benchmark result stores with its figures."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
from pathlib import Path

from mkdeploy.version import version_info


def environment(device: str, threads: int = 0) -> dict:
    """Machine and package facts stored with the figures."""

    import onnxruntime as ort  # heavy; only the ONNX backend needs it
    import torch  # heavy; imported on use so the core import stays light

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in (
        "torch",
        "transformers",
        "optimum",
        "optimum-onnx",
        "onnxruntime-gpu",
        "onnxruntime",
        "ctranslate2",
        "pywhispercpp",
        "peft",
        "numpy",
    ):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    env = {
        **version_info(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "threads": threads or "engine defaults",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime_providers": ort.get_available_providers(),
        "device": device,
        "packages": versions,
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env
