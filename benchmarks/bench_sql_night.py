"""Benchmark a night's read from a source that keeps the whole history: PostgreSQL, and a Parquet folder.

Each source is read whole, and with only the rows of batches the ledger does not hold (or holds with other row counts).

A registry of 10k, 100k and 1M procedures (with their levels) is loaded into a fresh schema of the PostgreSQL at
``--url`` (default: ``$CEMENTRISK_TEST_POSTGRES_URL``), with one more batch of 1% on top, and indexes on
``procedures(extract_batch)`` and ``procedures(procedure_id)`` and ``levels(procedure_id)``. Then it times:

- ``whole``: ``read_source(url)``, every row of both tables (what ``--verify-registered`` reads);
- ``night``: ``read_source(url, registered=...)`` with the ledger's batches and row counts: the registered batches
  whose procedure and level counts in the database equal the ledger's are left out (asked as ranges of batch
  numbers), and counted there.

Each read is followed by ``validate_batch`` against the ledger (timed apart): after a whole read, validation sets the
history aside itself, after coercing every row and comparing each registered batch's content fingerprint. All four
must accept the same procedures.

The same rows are also written as one Parquet file per table (``synth.generator.write_registry``) and read the same
two ways (``parquet_night``, ``parquet_whole``). Loading (COPY, Parquet writing) is set-up and not timed. The schema
is dropped afterwards.

    .venv/bin/python benchmarks/bench_sql_night.py [--sizes 10000 100000 1000000] [--url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_ingest import PeakRss  # noqa: E402


def _copy(connection, schema: str, name: str, frame) -> None:
    """CREATE TABLE with the frame's columns (integer extract_batch) and COPY its rows in."""
    import pandas as pd

    def sql_type(column: str, dtype) -> str:
        if pd.api.types.is_bool_dtype(dtype):
            return "boolean"
        if pd.api.types.is_integer_dtype(dtype):
            return "bigint"
        if pd.api.types.is_float_dtype(dtype):
            return "double precision"
        return "text"

    columns = ", ".join(f'"{c}" {sql_type(c, t)}' for c, t in frame.dtypes.items())
    connection.execute(f'CREATE TABLE {schema}."{name}" ({columns})')
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False, na_rep="\\N")
    buffer.seek(0)
    with connection.cursor().copy(f'COPY {schema}."{name}" FROM STDIN (FORMAT csv, NULL \'\\N\')') as copy:
        while chunk := buffer.read(1 << 20):
            copy.write(chunk)


def run_size(size: int, *, url: str, seed: int, folder: Path) -> dict:
    from dataclasses import replace

    import psycopg
    import sqlalchemy as sa

    from bench_nightly import split_night
    from records.readers import RawBatch, read_source
    from records.sources import connectable_url
    from records.validation import Registered, validate_batch
    from synth.generator import write_registry

    base, night, _ = split_night(size, seed=seed)
    # the ledger after registering the base: each batch's content fingerprint and row counts (set-up, not timed)
    contents = validate_batch(RawBatch(procedures=base.procedures, levels=base.levels, source="base")).contents
    registered = Registered(contents={b: c.sha256 for b, c in contents.items()})
    counts_of = {b: c.rows() for b, c in contents.items()}
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    dsn = sa.engine.make_url(connectable_url(url)).set(drivername="postgresql").render_as_string(hide_password=False)
    import pandas as pd

    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
        try:
            counts = {"procedures": size, "new": len(night.procedures),
                      "levels_total": len(base.levels) + len(night.levels)}
            whole = {}
            for name in ("procedures", "levels"):
                whole[name] = pd.concat([getattr(base, name), getattr(night, name)], ignore_index=True)
                _copy(connection, schema, name, whole[name])
            write_registry(replace(base, **whole), folder)
            del whole
            del base, night
            gc.collect()
            connection.execute(f"CREATE INDEX ON {schema}.procedures (extract_batch)")
            connection.execute(f"CREATE INDEX ON {schema}.procedures (procedure_id)")
            connection.execute(f"CREATE INDEX ON {schema}.levels (procedure_id)")
            connection.execute(f"ANALYZE {schema}.procedures")
            connection.execute(f"ANALYZE {schema}.levels")
            source = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
            peak = PeakRss()
            out = dict(counts)
            for label, where, after in (("night", source, counts_of), ("whole", source, None),
                                        ("parquet_night", folder, counts_of), ("parquet_whole", folder, None)):
                peak.reset()
                before = peak.peak_mb()
                start = time.perf_counter()
                raw = read_source(where, registered=after)
                out[f"{label}_s"] = round(time.perf_counter() - start, 2)
                out[f"{label}_rows"] = len(raw.procedures) + len(raw.levels)
                out[f"{label}_peak_mb"] = round(peak.peak_mb() - before)
                if label.endswith("night"):
                    out[f"{label}_skipped"] = sum(raw.skipped.values())
                start = time.perf_counter()
                result = validate_batch(raw, registered=registered)  # the whole read sets the history aside here
                out[f"{label}_validate_s"] = round(time.perf_counter() - start, 2)
                out[f"{label}_accepted"] = len(result.procedures.accepted)
                del raw, result
        finally:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--url", default=os.environ.get("CEMENTRISK_TEST_POSTGRES_URL",
                                                        "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(run_size(size, url=args.url, seed=args.seed, folder=Path(tmp) / "history"))
        print(rows[-1], file=sys.stderr, flush=True)
    print("| registry | new batch | rows in the source | rows read at night | PostgreSQL night: read (s) "
          "| + validate (s) | PostgreSQL whole: read (s) | + validate (s) | Parquet night: read (s) | + validate (s) "
          "| Parquet whole: read (s) | + validate (s) | whole read: added peak RSS (MB, PostgreSQL / Parquet) |")
    print("|" + "---:|" * 13)
    for r in rows:
        total = r["procedures"] + r["new"] + r["levels_total"]
        cells = [f"{r['procedures']:,}", f"{r['new']:,}", f"{total:,}", f"{r['night_rows']:,}"]
        for label in ("night", "whole", "parquet_night", "parquet_whole"):
            cells += [str(r[f"{label}_s"]), str(r[f"{label}_validate_s"])]
        cells.append(f"{r['whole_peak_mb']:,} / {r['parquet_whole_peak_mb']:,}")
        print("| " + " | ".join(cells) + " |")
        assert len({r[f"{label}_accepted"] for label in ("night", "whole", "parquet_night", "parquet_whole")}) == 1

if __name__ == "__main__":
    main()
