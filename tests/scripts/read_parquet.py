#!/usr/bin/env python3
"""Reads a results directory's Parquet tables with DuckDB (or pandas when DuckDB is absent) and checks
them against the CSVs: same columns, same rows, typed key columns, equal values (floats within the
CSV's rounding).

    python3 tests/scripts/read_parquet.py RESULTS_DIR

Exit 0: every table matched; 1: a mismatch (printed); 2: neither duckdb nor pandas is installed.
"""
import csv
import math
import sys
from pathlib import Path

TABLES = ["ops", "kernels", "steps"]


def read_csv(path):
    with open(path, newline="") as f:
        r = csv.reader(f)
        header = next(r)
        return header, list(r)


def read_duckdb(path):
    import duckdb

    con = duckdb.connect()
    cur = con.execute(f"SELECT * FROM read_parquet('{path}')")
    cols = [d[0] for d in cur.description]
    rows = [list(r) for r in cur.fetchall()]
    types = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()}
    return cols, types, rows


def read_pandas(path):
    import pandas as pd

    df = pd.read_parquet(path)
    rows = [[None if (isinstance(v, float) and math.isnan(v)) or v is None else v for v in r]
            for r in df.itertuples(index=False, name=None)]
    return list(df.columns), {c: str(t) for c, t in df.dtypes.items()}, rows


def same(value, text):
    if value is None:
        return text == ""
    if isinstance(value, str):
        return value == text
    if isinstance(value, bool):
        return str(int(value)) == text
    if isinstance(value, int):
        return text != "" and value == int(text)
    decimals = len(text.split(".")[1]) if "." in text else 0
    return text != "" and abs(float(value) - float(text)) <= 0.5 * 10 ** -decimals * (1 + 1e-9) + 1e-12


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    d = Path(sys.argv[1])
    try:
        import duckdb  # noqa: F401

        reader, name = read_duckdb, "duckdb"
    except ImportError:
        try:
            import pandas  # noqa: F401
            import pyarrow  # noqa: F401

            reader, name = read_pandas, "pandas"
        except ImportError:
            print("neither duckdb nor pandas (with pyarrow) is installed: pip install duckdb", file=sys.stderr)
            return 2
    bad = 0
    for t in TABLES:
        header, rows = read_csv(d / f"{t}.csv")
        cols, types, prows = reader(d / f"{t}.parquet")
        if cols != header:
            print(f"{t}: columns differ: {cols} vs {header}")
            bad += 1
            continue
        if len(prows) != len(rows):
            print(f"{t}: {len(prows)} Parquet rows, {len(rows)} CSV rows")
            bad += 1
            continue
        before = bad
        for i, (p, c) in enumerate(zip(prows, rows)):
            for col, v, text in zip(cols, p, c):
                if not same(v, text):
                    print(f"{t} row {i} column {col}: {v!r} vs {text!r}")
                    bad += 1
        if bad > before:
            continue
        key_types = {k: types.get(k) for k in ("host", "batch_size", "input_len", "rank")}
        print(f"{t}.parquet ({name}): {len(prows)} rows x {len(cols)} columns match {t}.csv; key types {key_types}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
