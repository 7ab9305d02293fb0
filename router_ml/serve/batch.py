"""``router-ml score``: add the routing decision to every row of a file of prompts.

    router-ml score --model models/default --input logs.parquet --output scored.parquet
    router-ml score --model models/default --input logs.parquet --output scored --spark

The input (Parquet, CSV or JSONL, by suffix) is read in batches (``--batch-size`` rows; Parquet
through ``pyarrow.parquet.ParquetFile.iter_batches``), so memory does not grow with the file;
each batch gets the columns of :func:`output_columns`: ``model`` (the chosen model, as
``route`` chooses it, fallback included), for a two-model router ``score`` (float64 in [0, 1]),
and ``quality:<model>`` (float64 in [0, 1], the predicted quality) for every candidate (with
``--messages-column``, a row is a chat, scored as ``route`` scores its messages); it is
appended to the output (format by suffix), written beside the target and renamed into place
when complete. With ``--spark`` the job runs on a local SparkSession (see
:mod:`router_ml.serve.spark`) and the output is a Parquet directory.

Needs pyarrow (``pip install 'router_ml[spark]'``, also in ``[train]``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from router_ml.core.prompts import chat_texts
from router_ml.errors import DataFormatError, OutputPathError
from router_ml.serve._columns import decision_columns, output_columns

TASK_COLUMNS = ("task", "task_similarity")
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl",
           ".json": "jsonl"}


def _format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataFormatError(f"{path}: unknown file type {path.suffix!r}; use one of "
                              f"{', '.join(sorted(FORMATS))}")
    return fmt


def _reader_format(fmt: str) -> str:
    return "json" if fmt == "jsonl" else fmt  # the name train's reader uses


def _check_input(path: Path, prompt_column: str) -> str:
    """The input's format; a missing or 0-byte file is the error ``train --table`` gives."""
    from router_ml.learn.tables import empty_file_error

    fmt = _format(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise empty_file_error(path, "to score", prompt_column)
    return fmt


def _check_text(path: Path, batch, first_row: int):
    """A CSV with bytes that are not UTF-8 comes back from pyarrow as binary columns (its
    text would be lost or mangled): the error train gives for it, naming the cell."""
    import pyarrow as pa

    from router_ml.learn.tables import unreadable_error

    for name, column in zip(batch.schema.names, batch.columns):
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            for i, cell in enumerate(column.to_pylist()):
                try:
                    None if cell is None else cell.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataFormatError(f"{unreadable_error(path, 'csv', e)}, in column "
                                          f"{name!r}, data row {first_row + i + 1}") from None


def iter_batches(path, batch_size: int = 10_000, prompt_column: str = "prompt"):
    """pyarrow RecordBatches of a Parquet, CSV or JSONL file, ``batch_size`` rows at most.

    A file its reader rejects (empty, not Parquet, not UTF-8 text) is a
    :class:`~router_ml.errors.DataFormatError` worded as ``router-ml train --table`` words it.
    """
    import pyarrow as pa

    from router_ml.learn.tables import unreadable_error

    path = Path(path)
    fmt = _check_input(path, prompt_column)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size)
        elif fmt == "csv":
            import pyarrow.csv as pcsv

            reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 22))
            n = 0
            for batch in reader:
                _check_text(path, batch, n)
                for start in range(0, batch.num_rows, batch_size):
                    yield batch.slice(start, batch_size)
                n += batch.num_rows
        else:
            rows = []
            with open(path, encoding="utf-8-sig") as f:  # -sig: drop a BOM, as train does
                for i, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise DataFormatError(f"{path}: line {i} is not JSON ({e})") from None
                    if len(rows) == batch_size:
                        yield pa.RecordBatch.from_pylist(rows)
                        rows = []
            if rows:
                yield pa.RecordBatch.from_pylist(rows)
    except (pa.ArrowException, UnicodeDecodeError) as e:
        raise unreadable_error(path, _reader_format(fmt), e) from None


def file_rows(path) -> int | None:
    """Row count when cheap to know (Parquet metadata), else None (also for a file that
    :func:`iter_batches` will reject)."""
    import pyarrow as pa

    path = Path(path)
    if _format(path) == "parquet" and path.is_file():
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except pa.ArrowException:
            return None
    return None


def score_batch(router, batch, prompt_column: str, source="input", *,
                messages_column: str | None = None, tasks=None):
    """``batch`` with the columns of :func:`output_columns` appended (pyarrow RecordBatch).
    With ``messages_column``, each row is the chat in that column, JSON text or a list of
    messages (:func:`router_ml.core.prompts.chat_texts`), and ``prompt_column`` is not
    read. tasks: a :class:`router_ml.loop.tasks.TaskDetector`, which adds the columns
    ``task`` (None when no task is close enough) and ``task_similarity``."""
    import pyarrow as pa

    column = messages_column or prompt_column
    if column not in batch.schema.names:
        flag = "--messages-column" if messages_column else "--prompt-column"
        raise DataFormatError(f"{source}: no column {column!r} (columns: "
                              f"{', '.join(batch.schema.names)}); pass {flag}")
    names = output_columns(router)
    clash = [c for c in [*names, *(TASK_COLUMNS if tasks else ())] if c in batch.schema.names]
    if clash:
        raise DataFormatError(f"{source}: already has column(s) {', '.join(clash)}; rename them "
                              "before scoring")
    if messages_column:
        try:
            prompts = chat_texts(batch.column(column).to_pylist(),
                                 f"{source}: {column!r} at batch")
        except (TypeError, ValueError) as e:
            raise DataFormatError(str(e)) from None
    else:
        prompts = batch.column(prompt_column).to_pylist()
        missing = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
        if missing:
            raise DataFormatError(f"{source}: {len(missing)} rows have no text in "
                                  f"{prompt_column!r} (first at batch row {missing[0]}); drop "
                                  "or fill them")
    cols = decision_columns(router, prompts)
    arrays = [pa.array(cols["model"].tolist(), pa.string())]
    arrays += [pa.array(cols[c], pa.float64()) for c in names[1:]]
    if tasks is not None:
        found = tasks.detect_batch(prompts)
        arrays += [pa.array([t for t, _ in found], pa.string()),
                   pa.array([s for _, s in found], pa.float64())]
        names = [*names, *TASK_COLUMNS]
    return pa.RecordBatch.from_arrays([*batch.columns, *arrays],
                                      names=[*batch.schema.names, *names])


class _Writer:
    def __init__(self, path: Path, schema, fmt: str):
        self.fmt = fmt
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            self.w = pq.ParquetWriter(path, schema)
        elif self.fmt == "csv":
            import pyarrow.csv as pcsv

            self.w = pcsv.CSVWriter(path, schema)
        else:
            self.w = open(path, "w", encoding="utf-8")

    def write(self, batch):
        if self.fmt == "jsonl":
            for row in batch.to_pylist():
                self.w.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        else:
            self.w.write_batch(batch)

    def close(self):
        self.w.close()


def score_file(router, input_path, output_path, prompt_column: str = "prompt",
               batch_size: int = 10_000, progress: bool = False, *,
               messages_column: str | None = None, tasks=None) -> int:
    """Score every row of ``input_path`` into ``output_path`` (the prompt column, or with
    ``messages_column`` each row's chat, see :func:`score_batch`); returns the number of
    rows."""
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.is_dir():
        raise OutputPathError(f"{output_path} is a folder; give a file name for the output "
                              f"(format by suffix: {', '.join(sorted(FORMATS))})")
    _format(output_path)
    _check_input(input_path, messages_column or prompt_column)
    if not output_path.parent.is_dir():
        raise OutputPathError(f"{output_path}: the folder {output_path.parent} does not exist; "
                              "create it first or write elsewhere")
    tmp = output_path.with_name(f".{output_path.stem}.tmp-{os.getpid()}{output_path.suffix}")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=file_rows(input_path), unit="rows", desc="scoring")
    writer, n = None, 0
    try:
        for batch in iter_batches(input_path, batch_size, messages_column or prompt_column):
            out = score_batch(router, batch, prompt_column, input_path,
                              messages_column=messages_column, tasks=tasks)
            if writer is None:
                writer = _Writer(tmp, out.schema, _format(output_path))
            writer.write(out)
            n += batch.num_rows
            if bar is not None:
                bar.update(batch.num_rows)
        if writer is None:
            raise DataFormatError(f"{input_path}: no rows to score")
        writer.close()
        writer = None
        os.replace(tmp, output_path)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
        if bar is not None:
            bar.close()
    return n






__all__ = ["iter_batches", "score_batch", "score_file",]
