"""Writing and reading tables: CSV, Parquet, JSON and Markdown, always atomically.

The only module that imports pyarrow. Rows are dicts with unit-suffixed keys holding SI values; the
column order is the order keys first appear. ``units`` maps column -> unit (e.g. ``"s"``, ``"kW"``);
Parquet stores it in each Arrow field's metadata (``{"unit": ...}``, only for columns with a unit) and
``meta`` (run manifest: scenario hash, seeds, version, ...) in the schema metadata as JSON strings.
JSON files hold ``{"meta": ..., "units": ..., "rows": [...]}``; non-finite floats become null.

Atomic: each writer writes a temporary file in the destination directory and ``os.replace``-s it onto
the destination, so a failed write leaves neither a partial file nor the temporary behind.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from simulator.errors import InputError
from simulator.report import markdown_table

TABLE_SUFFIXES: tuple[str, ...] = (".csv", ".parquet", ".json", ".md")
READ_SUFFIXES: tuple[str, ...] = (".csv", ".parquet", ".json")


def _suffix(path: Path, valid: Sequence[str], what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in valid:
        raise InputError(
            f"cannot {what} '{path.name}': unknown suffix '{path.suffix}'; valid: {', '.join(valid)}"
        )
    return suffix


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then move it onto ``path``.

    On any error the temporary file is removed and the destination is left untouched.
    Raises ``InputError`` if the destination directory does not exist.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output directory '{parent}' does not exist")
    fd, tmp_name = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def plain(value: Any) -> Any:
    """A JSON-ready copy: numpy scalars/arrays, dataclasses, paths and tuples to builtins; NaN/inf to None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


def _scalar(value: Any) -> Any:
    """A cell value for flat formats: nested values become JSON text."""
    value = plain(value)
    return json.dumps(value) if isinstance(value, (dict, list)) else value


def _dumps(obj: Any) -> str:
    return json.dumps(plain(obj), indent=2, allow_nan=False) + "\n"


def _write_text(text: str) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    return write


def _csv_text(rows: Sequence[Mapping[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow(["" if (v := _scalar(r.get(c))) is None else v for c in columns])
    return buf.getvalue()


def _md_cell(value: Any) -> str:
    value = _scalar(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _md_text(rows: Sequence[Mapping[str, Any]], columns: list[str], units: Mapping[str, str]) -> str:
    headers = [f"{c} [{units[c]}]" if units.get(c) else c for c in columns]
    cells = [[_md_cell(r.get(c)) for c in columns] for r in rows]
    numeric = [all(isinstance(plain(r.get(c)), (int, float, type(None))) for r in rows) for c in columns]
    return markdown_table(headers, cells, numeric) + "\n"


def arrow_table(
    rows: Sequence[Mapping[str, Any]], *, units: Mapping[str, str], meta: Mapping[str, Any] | None = None
) -> pa.Table:
    """An Arrow table of ``rows`` with each column's unit in its field metadata and ``meta`` in the schema's.

    Column types are inferred (ints stay int64, mixed int/float become double, all-null columns null).
    """
    columns = _columns(rows)
    fields, arrays = [], []
    for c in columns:
        values = [_scalar(r.get(c)) for r in rows]
        if any(isinstance(v, float) for v in values):
            values = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in values]
        try:
            array = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            array = pa.array([None if v is None else str(v) for v in values], type=pa.string())
        unit = units.get(c)
        fields.append(pa.field(c, array.type, metadata={"unit": unit} if unit else None))
        arrays.append(array)
    schema_meta = {str(k): v if isinstance(v, str) else json.dumps(plain(v)) for k, v in (meta or {}).items()}
    schema = pa.schema(fields, metadata=schema_meta or None)
    return pa.Table.from_arrays(arrays, schema=schema)


def write_table(
    rows: list[dict[str, Any]],
    path: str | Path,
    *,
    units: Mapping[str, str],
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``rows`` to ``path`` in the format of its suffix (.csv, .parquet, .json, .md), atomically.

    CSV and Markdown carry units in column names (and Markdown headers as ``name [unit]``); Parquet in
    field metadata; JSON in a ``units`` object. Raises ``InputError`` for an unknown suffix.
    """
    path = Path(path)
    suffix = _suffix(path, TABLE_SUFFIXES, "write")
    columns = _columns(rows)
    if suffix == ".parquet":
        table = arrow_table(rows, units=units, meta=meta)
        return atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    if suffix == ".csv":
        text = _csv_text(rows, columns)
    elif suffix == ".json":
        used_units = {c: units[c] for c in columns if c in units}
        text = _dumps({"meta": dict(meta or {}), "units": used_units, "rows": rows})
    else:
        text = _md_text(rows, columns, units)
    return atomic_write(path, _write_text(text))


def write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON, atomically (numpy, dataclasses, paths converted; NaN/inf -> null)."""
    return atomic_write(path, _write_text(_dumps(obj)))


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """Read a table written by :func:`write_table` (or any CSV with a header, or Parquet) as row dicts.

    CSV types are inferred by pyarrow (ints, floats, booleans; empty cells -> None).
    Raises ``InputError`` for a missing file, an unknown suffix or an unreadable file.
    """
    path = Path(path)
    suffix = _suffix(path, READ_SUFFIXES, "read")
    if not path.is_file():
        raise InputError(f"table file '{path}' not found")
    try:
        if suffix == ".parquet":
            return pq.read_table(path).to_pylist()
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return list(data["rows"] if isinstance(data, dict) else data)
        options = pa_csv.ConvertOptions(strings_can_be_null=True)
        return pa_csv.read_csv(path, convert_options=options).to_pylist()
    except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read table '{path}': {first_line}") from exc


def read_units(path: str | Path) -> dict[str, str]:
    """Column -> unit from a Parquet file's field metadata (columns without a unit are omitted)."""
    schema = pq.read_schema(Path(path))
    out = {}
    for f in schema:
        if f.metadata and b"unit" in f.metadata:
            out[f.name] = f.metadata[b"unit"].decode()
    return out


def write_columns(
    columns: Mapping[str, Any],
    path: str | Path,
    *,
    units: Mapping[str, str],
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write equal-length numpy columns (e.g. per-request records) to .parquet or .csv, atomically,
    with each column's unit in the Parquet field metadata."""
    path = Path(path)
    suffix = _suffix(path, (".parquet", ".csv"), "write")
    fields = [
        pa.field(k, pa.array(v).type, metadata={"unit": units[k]} if k in units else None)
        for k, v in columns.items()
    ]
    schema_meta = {str(k): v if isinstance(v, str) else json.dumps(plain(v)) for k, v in (meta or {}).items()}
    table = pa.Table.from_arrays(
        [pa.array(v) for v in columns.values()], schema=pa.schema(fields, metadata=schema_meta or None)
    )
    if suffix == ".parquet":
        return atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    import pyarrow.csv as pacsv

    return atomic_write(path, lambda tmp: pacsv.write_csv(table, tmp))


def check_output_path(path: str | Path, valid: Sequence[str] = TABLE_SUFFIXES) -> Path:
    """Fail early (InputError) on an output path with an unknown suffix or a missing directory."""
    path = Path(path)
    _suffix(path, valid, "write")
    if not path.parent.resolve().is_dir():
        raise InputError(f"cannot write '{path}': directory '{path.parent}' does not exist")
    return path
