"""Benchmarks behind ``tff bench NAME``: each module has ``HELP``, ``add_arguments(p)`` and ``run(args)``
and prints one JSON object with throughputs and the ratios measured in the same run."""

from __future__ import annotations

import os
import platform

import torch


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def machine(device: torch.device) -> dict:
    """Where a benchmark ran: device name, CPU model, cores and threads, torch and CUDA versions."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
            else _cpu_name(), "cpu": _cpu_name(), "cpu_cores": cores, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cuda": torch.version.cuda if device.type == "cuda" else None}
