"""torchrun helpers: process-group set-up, sharding, exact reductions and gathers.

Every dataset pass shards its samples ``rank::world`` (no padding, no duplicates), reduces
device tensors with a sum all-reduce and gathers per-image rows as Python objects. With one
process all helpers are no-ops, so the same code runs with or without ``torchrun``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


class DeviceError(ValueError):
    """The device asked for is not available (refused in one line)."""


@dataclass(frozen=True)
class DistContext:
    """Rank, world size and the device this process computes on."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise DeviceError(f"--device {device}: not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device}: CUDA is not available on this machine (torch "
                              f"{torch.__version__}, {torch.cuda.device_count()} GPU(s) visible); use --device cpu "
                              "or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    return dev


def init(device: str | torch.device = "auto") -> DistContext:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        deterministic_cuda()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    return DistContext(rank, world, dev)


def deterministic_cuda() -> None:
    """Ask PyTorch for its deterministic CUDA algorithms (cuDNN's deterministic kernels, no autotuning, cuBLAS with a
    fixed workspace) so that a run repeated on the same GPU gives the same files; operations without a deterministic
    kernel warn instead of failing. run.json records these flags (:func:`tffkit.results.numerics`)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: before the first GEMM
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def active() -> bool:
    """True when running inside an initialised multi-process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def shard(n: int, ctx: DistContext) -> list[int]:
    """The indices of ``range(n)`` this rank processes (``rank::world``)."""
    return list(range(ctx.rank, n, ctx.world))


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes in place (exact for integer and float64 accumulators)."""
    if active():
        if tensor.device.type == "cpu" or dist.get_backend() != "gloo":
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        else:
            host = tensor.cpu()
            dist.all_reduce(host, op=dist.ReduceOp.SUM)
            tensor.copy_(host)
    return tensor


_HOST_GROUP: Any = None  # a gloo group for small host-side reductions when the default backend is NCCL


def all_reduce_host(values: list[int]) -> list[int]:
    """Sum a short list of integers over processes on the CPU (gloo), so no GPU stream has to drain first."""
    global _HOST_GROUP
    if not active():
        return list(values)
    if dist.get_backend() != "gloo" and _HOST_GROUP is None:
        _HOST_GROUP = dist.new_group(backend="gloo")  # collective: every rank reaches this on the same call
    host = torch.tensor(values, dtype=torch.int64)
    dist.all_reduce(host, op=dist.ReduceOp.SUM, group=None if dist.get_backend() == "gloo" else _HOST_GROUP)
    return host.tolist()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (a one-element list without torchrun)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_rows(indices: Sequence[torch.Tensor], values: Sequence[torch.Tensor],
                width: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Every rank's per-batch dataset indices and value rows (on any device), concatenated in rank order.

    Values reach the host once, at the end of a pass (no sync per batch); ``width`` shapes the empty
    result when no rank has rows."""
    local = (torch.cat(list(indices)).numpy(), torch.cat(list(values)).cpu().numpy()) if indices else None
    parts = [p for p in gather_objects(local) if p is not None]
    if not parts:
        return np.zeros(0, np.int64), np.zeros((0, *width))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def barrier() -> None:
    """Wait for every process (no-op without torchrun)."""
    if active():
        dist.barrier()


def finalize() -> None:
    """Leave the process group if this process joined one."""
    global _HOST_GROUP
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _HOST_GROUP = None
