"""Hugging Face tables: parquet or Arrow shards with an image column, read in batches and never whole.

``--data`` is one ``.parquet``/``.arrow`` file or a folder of them (a Hub snapshot ``data/train-00000-of-00004.parquet``
or ``save_to_disk``'s ``data-00000-of-00001.arrow``). Columns, matched case-insensitively:

- the image: a column of HF's ``Image`` feature or named ``image``/``img``/``image_data``/``image_bytes``; HF's
  ``{'bytes': …, 'path': …}`` struct, raw bytes, or a path (relative paths from the shard's folder);
- the label: ``label``/``target``/``labels`` — 0/1 (any positive integer is fake), ``true``/``false``, a ClassLabel
  (its class names are read: ``['fake', 'real']`` makes 0 fake) or the words ``real``/``fake``;
- optional: the generator (``generator``/``model_name``/``generator_name``/``model``, the sets; the table's name
  without it), the group (``group``/``prompt_id``/``prompt``/``source_id``/``source``) and the split (``split``;
  else a ``train``/``val``/``test`` folder or file-name prefix).

Discovery reads only the label, generator, group and split columns, a batch at a time; an image is read when the
dataset asks for it (:func:`open_row`): parquet reads the image column of its row group (pyarrow reads a column of
a row group whole; one is kept per process for the next rows), Arrow files are memory-mapped. Memory follows the
row-group size (Hugging Face writes 100 image rows per group; larger ones are reported), not the table's. Each
sample's path is ``<shard>#<row>`` (row zero-padded to 9 digits): a stable identity for outputs.
Reals pair with the generators as in :func:`tffkit.genlayouts.pair_reals`.
"""

from __future__ import annotations

import bisect
import io
import json
import os
import re
from collections import OrderedDict
from pathlib import Path

from .dataspec import DatasetLayoutError, Groups
from .genlayouts import pair_reals
from .manifest import parse_label
from .walk import WalkLog, walk

TABLE_EXTENSIONS = (".parquet", ".arrow")
IMAGE_COLUMNS = ("image", "img", "image_data", "image_bytes")
LABEL_COLUMNS = ("label", "target", "labels")
GENERATOR_COLUMNS = ("generator", "model_name", "generator_name", "model")
GROUP_COLUMNS = ("group", "prompt_id", "prompt", "source_id", "source")
SPLIT_COLUMNS = ("split",)
SPLIT_NAMES = ("train", "val", "validation", "test")
ROW = re.compile(r"^(?P<shard>.+\.(?:parquet|arrow))#(?P<row>\d+)$", re.IGNORECASE)
SCAN_ROWS = 8192  # rows per batch while discovering (small columns only)
BUFFER = 1 << 20  # parquet reads a column chunk through a buffer of this size
LARGE_GROUP = 256 << 20  # row groups holding more image bytes than this are reported


def is_table(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a parquet/Arrow file by its extension."""
    return os.fspath(path).lower().endswith(TABLE_EXTENSIONS)


def row_path(shard: str, row: int) -> str:
    """The sample path of ``row`` of ``shard``."""
    return f"{shard}#{row:09d}"


def table_row(path: str | os.PathLike) -> tuple[str, int] | None:
    """(shard, row) of a table sample's path, None for an ordinary file."""
    m = ROW.match(os.fspath(path)) if "#" in os.fspath(path) else None
    return (m["shard"], int(m["row"])) if m and os.path.isfile(m["shard"]) else None


def shards(root: Path, log: WalkLog | None = None) -> list[str]:
    """The table files of ``root`` (itself when a file), sorted."""
    if root.is_file():
        return [str(root)]
    return sorted(os.path.join(folder, f) for folder, _, files in walk(root, log) for f in files if is_table(f))


def _split_of(shard: str, root: Path) -> str:
    parts = Path(os.path.relpath(shard, root)).parts if root.is_dir() else ()
    for part in reversed(parts[:-1]):
        if part.lower() in SPLIT_NAMES:
            return part.lower()
    m = re.match(r"^(train|validation|val|test)[-_.]", os.path.basename(shard).lower())
    return m.group(1) if m else ""


class Shard:
    """One table file: its schema, HF features and row count; columns read in batches; images row by row."""

    def __init__(self, path: str):
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise DatasetLayoutError(f"reading the table {path} needs pyarrow (a tffkit dependency): pip install "
                                     "pyarrow") from None

        self.path, self.parquet = path, path.lower().endswith(".parquet")
        try:
            if self.parquet:
                # a local file opened by its bytes: a non-UTF-8 name works, and nothing is read as a URI
                self.file = pq.ParquetFile(pa.OSFile(os.fsencode(path)), buffer_size=BUFFER)
                self.schema = self.file.schema_arrow
                md = self.file.metadata
                sizes = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
            else:
                self.source = pa.memory_map(os.fsencode(path))
                try:
                    reader = pa.ipc.open_file(self.source)
                    self.batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
                except pa.ArrowInvalid:
                    self.source.seek(0)
                    reader = pa.ipc.open_stream(self.source)
                    self.batches = list(reader)  # zero-copy views of the mapped file
                self.schema = reader.schema
                sizes = [b.num_rows for b in self.batches]
        except (OSError, pa.ArrowException) as exc:
            raise DatasetLayoutError(f"table {path} cannot be read: {str(exc).splitlines()[0]}") from None
        self.starts = [0]
        for n in sizes:
            self.starts.append(self.starts[-1] + n)
        self.num_rows = self.starts[-1]
        meta = (self.schema.metadata or {}).get(b"huggingface")
        try:
            self.features = json.loads(meta)["info"]["features"] if meta else {}
        except (ValueError, KeyError, TypeError):
            self.features = {}
        self._group: tuple | None = None  # parquet: (row group, its image column), read whole when first asked

    def column(self, names: tuple[str, ...], hf_type: str | None = None) -> str | None:
        """The first column named one of ``names`` (case-insensitive), or of the HF feature type ``hf_type``."""
        if hf_type:
            typed = [n for n in self.schema.names if isinstance(self.features.get(n), dict)
                     and self.features[n].get("_type") == hf_type]
            if typed:
                return typed[0]
        lower = {n.lower(): n for n in self.schema.names}
        return next((lower[n] for n in names if n in lower), None)

    def scan(self, columns: list[str]):
        """Python lists of ``columns``, a batch of rows at a time: ``(first row, {name: values})``."""
        first = 0
        if self.parquet:
            batches = self.file.iter_batches(batch_size=SCAN_ROWS, columns=columns)
        else:
            batches = (b.select(columns).slice(s, SCAN_ROWS) for b in self.batches
                       for s in range(0, max(b.num_rows, 1), SCAN_ROWS))
        for batch in batches:
            yield first, {name: batch.column(name).to_pylist() for name in columns}
            first += batch.num_rows

    def value(self, row: int, column: str):
        """The Python value of ``column`` at ``row``, reading only its row group (parquet; kept for the next rows)
        or its record batch (Arrow, memory-mapped)."""
        if not 0 <= row < self.num_rows:
            raise IndexError(f"row {row} is outside {self.path} ({self.num_rows} rows)")
        part = bisect.bisect_right(self.starts, row) - 1
        if not self.parquet:
            return self.batches[part].column(column)[row - self.starts[part]].as_py()
        if self._group is None or self._group[0] != part:
            for other in _OPEN.values():  # one row group in memory per process, whichever shard it is from
                other[0]._group = None
            self._group = (part, self.file.read_row_group(part, columns=[column], use_threads=False).column(0))
        return self._group[1][row - self.starts[part]].as_py()

    def largest_group(self, column: str) -> int:
        """Bytes of ``column`` (uncompressed) in the largest row group: what reading one of its images holds."""
        if not self.parquet:
            return 0
        md = self.file.metadata
        leaves = [i for i in range(md.num_columns) if md.schema.column(i).path.split(".")[0] == column]
        return max((sum(md.row_group(g).column(i).total_uncompressed_size for i in leaves)
                    for g in range(md.num_row_groups)), default=0)


_OPEN: OrderedDict[tuple[int, str], tuple[Shard, str, str]] = OrderedDict()  # (pid, shard) → (shard, column, kind)


def _reader(shard: str) -> tuple[Shard, str, str]:
    key = (os.getpid(), shard)  # a worker process opens its own files (a file offset is not shared across fork)
    if key not in _OPEN:
        table = Shard(shard)
        column, kind = image_column(table)
        _OPEN[key] = (table, column, kind)
        while len(_OPEN) > 4:
            _OPEN.popitem(last=False)
    _OPEN.move_to_end(key)
    return _OPEN[key]


def open_row(path: str) -> tuple[io.BytesIO | str, int | None]:
    """The image of a table sample (``<shard>#<row>``): a file-like object over its bytes and their number, or
    the image file's path (and None) where the table holds a path."""
    shard, row = table_row(path) or (None, None)
    if shard is None:
        raise FileNotFoundError(f"{path} is not a row of a table")
    table, column, kind = _reader(shard)
    value = table.value(row, column)
    data, file = (value.get("bytes"), value.get("path")) if kind == "struct" and value else \
        ((value, None) if kind == "bytes" else (None, value))
    if data:
        return io.BytesIO(data), len(data)
    if file:
        return (file if os.path.isabs(file) else os.path.join(os.path.dirname(shard), file)), None
    raise ValueError(f"row {row} of {shard} has no image in column {column!r}")


def image_column(table: Shard) -> tuple[str, str]:
    """(name, kind) of the image column: kind ``struct`` (HF's bytes/path), ``bytes`` or ``path``."""
    import pyarrow as pa

    name = table.column(IMAGE_COLUMNS, hf_type="Image")
    if name is None:
        raise DatasetLayoutError(f"table {table.path} has no image column ({'/'.join(IMAGE_COLUMNS)} or HF's Image "
                                 f"feature); its columns: {table.schema.names}")
    t = table.schema.field(name).type
    if pa.types.is_struct(t) and {t.field(i).name for i in range(t.num_fields)} & {"bytes", "path"}:
        return name, "struct"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return name, "bytes"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return name, "path"
    raise DatasetLayoutError(f"table {table.path}: image column {name!r} holds {t}, not image bytes, HF's "
                             "{bytes, path} struct or a path")


def _label_reader(table: Shard, column: str):
    """value → 0/1/None for the label column (ClassLabel names read from the HF features)."""
    names = (table.features.get(column) or {}).get("names") if isinstance(table.features.get(column), dict) else None
    if names:
        mapped = [parse_label(str(n)) for n in names]
        bad = [n for n, m in zip(names, mapped, strict=True) if m is None]
        if bad:
            raise DatasetLayoutError(f"table {table.path}: class(es) {bad} of the ClassLabel column {column!r} are "
                                     "neither real nor fake")
        return lambda v: mapped[v] if isinstance(v, int) and 0 <= v < len(mapped) else None
    return lambda v: None if v is None else (int(v) if isinstance(v, bool) else parse_label(str(v)))


def read_tables(root: Path, log: WalkLog) -> tuple[Groups, dict[str, str], list[str]]:
    """Groups ``(set, '', split, label) → row paths``, each row's group, and notes on what was found."""
    files = shards(root, log)
    if not files:
        raise DatasetLayoutError(f"no .parquet or .arrow file under {root}")
    fakes: dict[tuple[str, str], list[str]] = {}
    reals: dict[tuple[str, str], list[str]] = {}
    loose: dict[str, list[str]] = {}
    file_groups: dict[str, str] = {}
    described: set[tuple] = set()
    notes, bad, n_rows = [], [], 0
    default_set = root.stem if root.is_file() else root.name
    for shard in files:
        table = Shard(shard)
        image, kind = image_column(table)
        label = table.column(LABEL_COLUMNS)
        if label is None:
            raise DatasetLayoutError(f"table {shard} has no label column ({'/'.join(LABEL_COLUMNS)}); its columns: "
                                     f"{table.schema.names}")
        gen, group, split_col = (table.column(GENERATOR_COLUMNS), table.column(GROUP_COLUMNS),
                                 table.column(SPLIT_COLUMNS))
        to_label, split_name = _label_reader(table, label), _split_of(shard, root)
        big = table.largest_group(image)
        if big > LARGE_GROUP:
            notes.append(f"table {shard}: a row group holds {big / 2**20:.0f} MB of images; reading an image holds "
                         "its row group in memory (in each data-loading worker): rewrite the table with smaller row "
                         "groups (Hugging Face writes 100 image rows per group)")
        what = (image, kind, label, gen, group, split_col)
        if what not in described:
            described.add(what)
            notes.append(f"table: image column {image!r} ({kind}), labels from {label!r}, sets from "
                         + (f"{gen!r}" if gen else f"the table's name {default_set!r} (no generator column)")
                         + (f", groups from {group!r}" if group else "") + (f", splits from {split_col!r}"
                                                                              if split_col else ""))
        columns = [c for c in (label, gen, group, split_col) if c]
        n_rows += table.num_rows
        for first, values in table.scan(columns):
            for i, raw in enumerate(values[label]):
                lab, path = to_label(raw), row_path(shard, first + i)
                if lab is None:
                    bad.append((shard, first + i, raw))
                    continue
                name = str(values[gen][i]) if gen and values[gen][i] is not None else ""
                split = str(values[split_col][i]).lower() if split_col and values[split_col][i] else split_name
                if lab:
                    fakes.setdefault((name or default_set, split), []).append(path)
                elif name or not gen:
                    reals.setdefault((name or default_set, split), []).append(path)
                else:
                    loose.setdefault(split, []).append(path)
                if group and values[group][i] is not None:
                    file_groups[path] = str(values[group][i])
    if bad:
        shown = ", ".join(f"{Path(s).name} row {r} ({v!r})" for s, r, v in bad[:5])
        raise DatasetLayoutError(f"table {root}: {len(bad)} row(s) whose label is neither real nor fake: {shown}"
                                 + (" …" if len(bad) > 5 else ""))
    groups, shared = pair_reals(fakes, reals, loose, "table")
    notes.insert(0, f"table: {len(files)} shard(s), {n_rows} rows")
    return groups, file_groups, notes + shared
