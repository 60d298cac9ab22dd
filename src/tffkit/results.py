"""Writing results: atomic CSV/JSON/figure files and the ``run.json`` provenance record."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

# File names that are not UTF-8 reach the tables as strings with surrogates (escaped only when written). pandas ≥ 3
# stores text in Arrow when pyarrow is installed (it is: tffkit.tables reads parquet), and Arrow refuses
# surrogates; Python storage keeps them.
pd.set_option("mode.string_storage", "python")


def current_umask() -> int:
    """This process's umask (read from /proc where possible, so no other thread sees it change)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode(directory: bool = False) -> int:
    """The mode a new file (0666) or folder (0777) gets under the umask, as ``open``/``mkdir`` would give it."""
    return (0o777 if directory else 0o666) & ~current_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then move the file into place, so readers never see half a file.

    The file gets the usual mode for a new file (0644 under the common umask 022), not ``mkstemp``'s 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """A hard link ``dst`` to ``src`` (no extra disk space), or a copy where the file system refuses links."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def display_path(path: str | os.PathLike | bytes) -> str:
    """A file name as text that can always be written and printed: the undecodable bytes of a non-UTF-8 name
    (held by Python as surrogates) become ``\\xNN`` escapes."""
    text = os.fsdecode(path) if isinstance(path, bytes) else os.fspath(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _writable(value: Any) -> Any:
    """Strings with undecodable bytes escaped (:func:`display_path`), recursively through lists and dicts."""
    if isinstance(value, str):
        return display_path(value)
    if isinstance(value, dict):
        return {_writable(k): _writable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_writable(v) for v in value]
    return value


def write_csv(path: str | os.PathLike, frame: pd.DataFrame | list[dict]) -> Path:
    """Write a DataFrame (or a list of row dicts) as CSV, atomically; non-UTF-8 file names are escaped."""
    df = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
    text_cols = [c for c in df.columns if df[c].dtype == object or pd.api.types.is_string_dtype(df[c].dtype)]
    bad = [c for c in text_cols if not df[c].map(lambda v: not isinstance(v, str) or v.isascii()).all()]
    if bad:
        df = df.assign(**{c: df[c].map(lambda v: display_path(v) if isinstance(v, str) else v) for c in bad})
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return display_path(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return display_path(str(obj))


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON (numpy/torch scalars and paths converted, non-UTF-8 file names escaped), atomically."""
    text = json.dumps(_writable(data), indent=2, default=_json_default, allow_nan=True)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def save_figure(fig, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Save a matplotlib figure atomically (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    fmt = Path(path).suffix.lstrip(".") or "png"
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt))
    plt.close(fig)
    return out


_SHA256_CACHE: dict[tuple, str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (remembered per path, size, mtime and inode, so a study hashes each file once)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _SHA256_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _SHA256_CACHE[key] = digest.hexdigest()
    return _SHA256_CACHE[key]


def tree_identity(root: str | os.PathLike) -> dict[str, Any]:
    """Every file under ``root`` (links followed, loops skipped): how many, their bytes, and a digest of the
    sorted (relative path, size, mtime) list — adding, removing, replacing or rewriting a file changes it."""
    root = Path(root)
    if root.is_file():
        st = root.stat()
        return {"files": 1, "bytes": st.st_size, "digest": file_sha256(root)[:16]}
    lines, total, seen = [], 0, set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop or a folder linked twice
            dirnames.clear()
            continue
        seen.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError:  # a dangling link: its name still counts
                lines.append(f"{os.path.relpath(path, root)}\tmissing")
                continue
            total += st.st_size
            lines.append(f"{os.path.relpath(path, root)}\t{st.st_size}\t{st.st_mtime_ns}")
    digest = hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return {"files": len(lines), "bytes": total, "digest": digest}


def input_hashes(args: dict[str, Any]) -> dict[str, str]:
    """``checkpoint_sha256`` (``weights``), ``init_sha256``, ``ranking_sha256`` and ``generator_sha256`` for the
    arguments naming files."""
    out = {}
    for key, field in (("weights", "checkpoint_sha256"), ("init", "init_sha256"), ("ranking", "ranking_sha256"),
                       ("generator_weights", "generator_sha256")):
        value = args.get(key)
        if isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
            out[field] = file_sha256(value)
    return out


class InputIdentity:
    """What a study's inputs are, not only where: checkpoint SHA-256 and data file lists (each computed once)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], Any] = {}

    def file(self, path: str | os.PathLike | None) -> str | None:
        """SHA-256 of a file (None for no path; a missing file is caught by the config check)."""
        if path is None or not Path(path).is_file():
            return None
        return self._get("file", str(path), lambda: file_sha256(path))

    def tree(self, root: str | os.PathLike, sets: list[str] | None = None) -> dict:
        """Count, bytes and digest of the (path, size, mtime) list of every file under ``root`` (under its named
        ``sets`` only, when given: a set is a first-level folder)."""
        if not sets:
            return self._get("tree", str(root), lambda: tree_identity(root))
        return {s: self._get("tree", str(Path(root) / s), lambda s=s: tree_identity(Path(root) / s))
                for s in sorted(sets)}

    def _get(self, kind: str, key: str, make: Callable[[], Any]) -> Any:
        if (kind, key) not in self._seen:
            self._seen[kind, key] = make()
        return self._seen[kind, key]


def git_revision() -> str | None:
    """The git commit of the installed source tree, if it is a checkout."""
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except Exception:  # noqa: BLE001
        return None


def versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape the numbers."""
    import numpy
    import sklearn
    import torch
    import torchvision

    from . import __version__

    return {
        "tffkit": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
        "platform": platform.platform(),
        "cuda": torch.version.cuda or "none",
        "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }


NUMERIC_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
               "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "CUBLAS_WORKSPACE_CONFIG",
               "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE")
VECTOR_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_model() -> tuple[str, list[str]]:
    """The CPU's model name and the vector instruction sets it offers (``/proc/cpuinfo``; elsewhere the platform's
    processor string and no flags). oneDNN and the BLAS pick their kernels from these."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() == "model name":
                model = value.strip()
            elif key.strip().lower() == "flags" and not flags:
                offered = set(value.split())
                flags = [f for f in VECTOR_FLAGS if f in offered]
    except OSError:
        pass
    return model, flags


def numerics() -> dict[str, Any]:
    """What decides the floating-point results of a run besides its inputs: the CPU and the instruction set its math
    libraries dispatch to, the BLAS/OpenMP libraries and their threads, PyTorch's threads and deterministic flags,
    the GPU and its cuDNN/TF32 settings. Two runs agree bit for bit only where these agree (README)."""
    import torch

    model, flags = cpu_model()
    info: dict[str, Any] = {
        "cpu_model": model,
        "cpu_vector_flags": flags,
        "cpu_count": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "env": {k: os.environ[k] for k in NUMERIC_ENV if k in os.environ},
    }
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [{k: pool.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
                               for pool in threadpool_info()]
    except Exception:  # noqa: BLE001 - threadpoolctl is scikit-learn's dependency; its absence only loses detail
        info["threadpools"] = None
    if torch.cuda.is_available():
        info.update(cuda_device=torch.cuda.get_device_name(), cuda_capability=list(torch.cuda.get_device_capability()),
                    cudnn=torch.backends.cudnn.version(), cudnn_deterministic=torch.backends.cudnn.deterministic,
                    cudnn_benchmark=torch.backends.cudnn.benchmark, cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                    matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    return info


class RunRecord:
    """Collects a command's arguments and timing; :meth:`write` stores ``run.json``."""

    def __init__(self, command: str, args: dict[str, Any], world: int = 1):
        self.start = time.time()
        self.data: dict[str, Any] = {
            "command": command,
            "args": {k: v for k, v in args.items() if not callable(v)},
            "versions": versions(),
            "numerics": numerics(),
            "git_revision": git_revision(),
            **input_hashes(args),
            "world_size": world,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.start)),
        }

    def write(self, out_dir: str | os.PathLike, **extra: Any) -> Path:
        """Write ``out_dir/run.json`` with the elapsed time and any extra fields."""
        self.data.update(extra)
        self.data["elapsed_s"] = round(time.time() - self.start, 3)
        return write_json(Path(out_dir) / "run.json", self.data)


def marked_text(text: str, markers: tuple[str, str]) -> str:
    """The text between the two ``markers`` of a Markdown file (a generated block), ending in one newline."""
    start, end = markers
    return text[text.index(start) + len(start): text.index(end)].strip("\n") + "\n"


def replace_marked_text(path: Path, text: str, markers: tuple[str, str]) -> None:
    """Put ``text`` between the two ``markers`` of the Markdown file at ``path``."""
    start, end = markers
    old = path.read_text()
    path.write_text(old[: old.index(start) + len(start)] + "\n" + text + old[old.index(end):])
