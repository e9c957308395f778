"""Benchmark a night's read from PostgreSQL: the whole history against only the rows above the watermark.

A registry of 10k, 100k and 1M procedures (with their levels) is loaded into a fresh schema of the PostgreSQL at
``--url`` (default: ``$CEMENTRISK_TEST_POSTGRES_URL``), with one more batch of 1% on top, and indexes on
``procedures(extract_batch)`` and ``procedures(procedure_id)`` and ``levels(procedure_id)``. Then it times:

- ``whole``: ``read_source(url)``, every row of both tables (what a night read before the watermark pushdown);
- ``night``: ``read_source(url, after_batch=watermark)``, the new batch, with the rows of registered batches
  counted in the database.

Loading (COPY) is set-up and not timed. The schema is dropped afterwards.

    .venv/bin/python benchmarks/bench_sql_night.py [--sizes 10000 100000 1000000] [--url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import sys
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


def run_size(size: int, *, url: str, seed: int) -> dict:
    import psycopg
    import sqlalchemy as sa

    from bench_nightly import split_night
    from records.readers import read_source

    base, night, watermark = split_night(size, seed=seed)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    dsn = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    import pandas as pd

    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
        try:
            counts = {"procedures": size, "new": len(night.procedures),
                      "levels_total": len(base.levels) + len(night.levels)}
            for name in ("procedures", "levels"):
                frame = pd.concat([getattr(base, name), getattr(night, name)], ignore_index=True)
                _copy(connection, schema, name, frame)
                del frame
            del base, night
            gc.collect()
            connection.execute(f"CREATE INDEX ON {schema}.procedures (extract_batch)")
            connection.execute(f"CREATE INDEX ON {schema}.procedures (procedure_id)")
            connection.execute(f"CREATE INDEX ON {schema}.levels (procedure_id)")
            connection.execute(f"ANALYZE {schema}.procedures")
            connection.execute(f"ANALYZE {schema}.levels")
            source = f"{url}?options=-csearch_path%3D{schema}"
            peak = PeakRss()
            out = dict(counts)
            for label, after in (("night", watermark), ("whole", 0)):
                peak.reset()
                before = peak.peak_mb()
                start = time.perf_counter()
                raw = read_source(source, after_batch=after)
                out[f"{label}_s"] = round(time.perf_counter() - start, 2)
                out[f"{label}_rows"] = len(raw.procedures) + len(raw.levels)
                out[f"{label}_peak_mb"] = round(peak.peak_mb() - before)
                if label == "night":
                    out["skipped_rows"] = sum(raw.skipped.values())
                del raw
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
        rows.append(run_size(size, url=args.url, seed=args.seed))
        print(rows[-1], file=sys.stderr, flush=True)
    print("| registry | new batch | rows in the database | night: rows read | night (s) | night: added peak RSS (MB) "
          "| whole: rows read | whole (s) | whole: added peak RSS (MB) |")
    print("|" + "---:|" * 9)
    for r in rows:
        total = r["procedures"] + r["new"] + r["levels_total"]
        print(f"| {r['procedures']:,} | {r['new']:,} | {total:,} | {r['night_rows']:,} | {r['night_s']} "
              f"| {r['night_peak_mb']:,} | {r['whole_rows']:,} | {r['whole_s']} | {r['whole_peak_mb']:,} |")


if __name__ == "__main__":
    main()
