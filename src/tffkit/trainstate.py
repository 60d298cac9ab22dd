"""The state of a training run besides its weights: early stopping, partial-epoch records and random states, kept in
``model_last.pth`` in forms ``torch.load(weights_only=True)`` reads (NumPy's key array and index arrays as
tensors), so an exact resume restores them."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed as tdist


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


@dataclass
class EarlyStopping:
    """Plateau detector on validation accuracy: an epoch improves when acc ≥ best + ``delta`` (Wang et al.)."""

    patience: int = 5
    delta: float = 0.001
    best: float | None = None
    counter: int = 0

    def update(self, acc: float) -> bool:
        """Record one epoch; True once ``patience`` epochs in a row did not improve."""
        if self.best is None or acc >= self.best + self.delta:
            self.best, self.counter = acc, 0
            return False
        self.counter += 1
        return self.counter >= self.patience


def checksum(net: nn.Module) -> float:
    """The sum of all parameters (ranks in sync have the same)."""
    return float(sum(p.detach().double().sum() for p in net.parameters()))


def tensorboard(out: Path, ctx: tdist.DistContext):
    """A TensorBoard writer on the main process, or None (also without tensorboard installed)."""
    try:  # optional: skipped silently without tensorboard
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(out / "tensorboard")) if ctx.is_main else None
    except Exception:  # noqa: BLE001
        return None


def new_partial() -> dict[str, Any]:
    """An empty partial-epoch record."""
    return {"loss_sum": 0.0, "n": 0, "seen": [], "failed": [], "time": 0.0}
