"""What ``model_last.pth`` stores besides weights, in forms ``torch.load(weights_only=True)`` reads: random states
(NumPy's key array as a tensor) and partial-epoch records (index arrays as tensors). Exact resume restores them."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state(device: torch.device) -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) random states of this process as tensors, numbers and tuples."""
    cuda = {"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = (str(name), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state(), **cuda}


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore the random states of :func:`rng_state`."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((name, keys.astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def storable(partial: dict[str, Any]) -> dict[str, Any]:
    """A partial-epoch record with its index arrays as tensors."""
    return {**partial, "seen": [torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in partial["seen"]]}


def restored(partial: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`storable`."""
    return {**partial, "seen": [a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a) for a in partial["seen"]]}
