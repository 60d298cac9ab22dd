"""Reading checkpoints safely and loading them strictly; writing ours so that they read back safely.

Every file is read with ``torch.load(weights_only=True)``: tensors, containers and numbers only, so unpickling
cannot run code. A checkpoint that needs pickled objects (an ``argparse.Namespace`` inside, as some released
detectors have) is refused with a message naming the object and the opt-in (``--trust-checkpoint`` /
``trust=True``), which then loads it with a warning. ``.safetensors`` files and TorchScript archives (OpenAI's
CLIP weights) are read by their own safe readers. A corrupt, truncated or foreign file is one line naming the
file and what is wrong with it.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..results import atomic_write, display_path


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the requested architecture."""


class CheckpointReadError(ValueError):
    """A file cannot be read as a checkpoint (corrupt, truncated, not PyTorch)."""


class UnsafeCheckpointError(CheckpointReadError):
    """A checkpoint needs pickled Python objects, whose unpickling can run arbitrary code."""


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _pickled_object(path: Path) -> str | None:
    """The first non-torch Python object a checkpoint's pickle refers to (found by reading its opcodes, nothing
    is unpickled); None when there is none or the file is not a readable archive."""
    try:
        with zipfile.ZipFile(path) as z:
            data = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"))
        strings: list[str] = []
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                name = str(arg).replace(" ", ".")
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                name = ".".join(strings[-2:])
            else:
                if isinstance(arg, str):
                    strings.append(arg)
                continue
            if not name.startswith(("torch.", "collections.OrderedDict", "_codecs.")):
                return name
    except (zipfile.BadZipFile, OSError, StopIteration, ValueError):
        return None
    return None


def _what_is_wrong(path: Path, exc: BaseException) -> str:
    """A short diagnosis of an unreadable file from its size, first bytes and the loader's error."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty"
    with open(path, "rb") as f:
        head = f.read(8)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if head.startswith(b"PK"):
        return f"corrupt or truncated PyTorch archive ({size} bytes): {first[:160]}"
    if head[:1] == b"\x80":
        return f"corrupt or truncated pickle ({size} bytes): {type(exc).__name__}: {first[:120]}"
    return f"not a PyTorch checkpoint (starts with {head!r}; {size} bytes)"


def read_checkpoint(path: str | os.PathLike, trust: bool = False, what: str = "checkpoint") -> Any:
    """The object stored in ``path``, read without running pickled code unless ``trust`` (then with a warning)."""
    path = Path(path)
    shown = display_path(path)
    if path.is_dir():
        path = snapshot_weights(path, what)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {shown} not found")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise CheckpointReadError(f"cannot read {what} {shown}: install safetensors for .safetensors") from exc
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - any reader failure is one line naming the file
            raise CheckpointReadError(f"cannot read {what} {shown}: {_what_is_wrong(path, exc)}") from None
    if _is_torchscript(path):  # OpenAI's CLIP files: TorchScript's own reader (no Python unpickling)
        try:
            return torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as exc:  # noqa: BLE001
            raise CheckpointReadError(f"cannot read {what} {shown}: {_what_is_wrong(path, exc)}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        obj = found.group(1) if found else _pickled_object(path)  # protocol-5 pickles fail before naming it
        if obj is None:
            raise CheckpointReadError(f"cannot read {what} {shown}: {_what_is_wrong(path, exc)}") from None
        if not trust:
            raise UnsafeCheckpointError(
                f"{what} {shown} holds a pickled Python object ({obj}): unpickling it could run "
                "arbitrary code, so tffkit reads checkpoints with torch.load(weights_only=True) and refused it. If you "
                "trust where the file comes from, pass --trust-checkpoint (Python: trust=True)") from None
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated or foreign files
        raise CheckpointReadError(f"cannot read {what} {shown}: {_what_is_wrong(path, exc)}") from None
    warnings.warn(f"loading {what} {shown} with full unpickling (--trust-checkpoint): it holds pickled Python "
                  "objects, which can run code", stacklevel=2)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointReadError(f"cannot read {what} {shown}: {_what_is_wrong(path, exc)}") from None


SNAPSHOT_FILES = ("model.safetensors", "pytorch_model.bin")


def snapshot_weights(folder: Path, what: str = "checkpoint") -> Path:
    """The weights file of a Hugging Face snapshot folder (``PyTorchModelHubMixin.save_pretrained``:
    ``config.json`` + ``model.safetensors``); a folder without one is refused naming what was expected."""
    for name in SNAPSHOT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointReadError(f"{what} {display_path(folder)} is a folder without {' or '.join(SNAPSHOT_FILES)} "
                              "(a Hugging Face snapshot folder); pass the weights file itself")


def extract_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The weights inside a checkpoint: under ``'model'``/``'state_dict'`` or bare; ``module.`` stripped."""
    sd = checkpoint
    for key in ("model", "state_dict"):
        if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
            break
    if isinstance(sd, nn.Module):
        sd = sd.state_dict()
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointMismatchError(
            "checkpoint holds no state dict: expected {'model': state_dict}, {'state_dict': ...} "
            "or a bare state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def _show(items: list[str], n: int = 8) -> str:
    return f"{len(items)} ({', '.join(items[:n])}{', …' if len(items) > n else ''})"


def load_state(model: nn.Module, checkpoint: Mapping[str, Any], arch: str = "model", layout: str | None = None,
               source: str | None = None) -> nn.Module:
    """Load ``checkpoint`` strictly into ``model``; a mismatch names the detector, the keys and shapes at fault
    and (``layout``) the layout expected."""
    sd = extract_state_dict(checkpoint)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        where = f" ({display_path(source)})" if source else ""
        raise CheckpointMismatchError(
            f"checkpoint{where} does not fit architecture {arch!r}: missing keys {_show(missing)}; "
            f"unexpected keys {_show(unexpected)}; shape mismatches {_show(shapes, 4)}"
            + (f"; expected layout: {layout}" if layout else ""))
    model.load_state_dict(sd, strict=True)
    return model


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra: Any) -> Path:
    """Save ``{'model': state_dict, **extra}`` (Wang et al.'s format), atomically; ``extra`` must be tensors,
    containers, numbers or strings so that the file reads back with ``weights_only=True``."""
    net = model.module if hasattr(model, "module") else model
    payload = {"model": {k: v.detach().cpu() for k, v in net.state_dict().items()}, **extra}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_init_weights(model: nn.Module, path: str | os.PathLike, trust: bool = False) -> dict[str, Any]:
    """Copy same-architecture weights (e.g. torchvision ImageNet) into ``model``; a head that does not fit
    (1000 classes vs one logit) is re-initialised as Wang et al. do (weight ~ N(0, 0.02)). Returns a report."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--init weights {display_path(path)} not found")
    sd = extract_state_dict(read_checkpoint(path, trust, "--init weights"))
    own = model.state_dict()
    head_name = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    head = {k for k in own if k.startswith(head_name + ".")}
    fits = [k for k in own if k in sd and sd[k].shape == own[k].shape]
    missing = [k for k in own if k not in sd and k not in head and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in own if k in sd and k not in head and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointMismatchError(
            f"--init {display_path(path)} does not fit the architecture: missing {missing[:8]}, unexpected "
            f"{unexpected[:8]}, shape mismatches {shapes[:8]}")
    model.load_state_dict({k: sd[k] for k in fits}, strict=False)
    reinit = sorted(k for k in head if k not in fits)
    if f"{head_name}.weight" in reinit:
        nn.init.normal_(model.get_submodule(head_name).weight, 0.0, 0.02)
    return {"path": str(path), "loaded": len(fits), "total": len(own), "reinitialised": reinit,
            "not_in_file": [k for k in own if k not in sd and k not in head]}
