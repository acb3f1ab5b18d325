"""Readers for the real public datasets used in tests, benchmarks and notebooks.

They turn each file into the contract's tables; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

__all__ = ["read_cdnow"]


def read_cdnow(path: str | Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """CDNOW purchases (`CDNOW_master.txt`: customer_id date(yyyymmdd) number_of_cds dollar_value)
    as contract tables: customers (signup = first purchase) and `purchase` events (value = dollars).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "CDNOW_master.txt"
    text = path.read_text(encoding="utf-8").split()
    header = ["customer_id", "date", "number_of_cds", "dollar_value"]
    if text[:4] == header:
        text = text[4:]
    if len(text) % 4:
        raise ValueError(f"{path}: expected 4 whitespace-separated fields per row ({', '.join(header)})")
    raw = pl.DataFrame({h: text[i::4] for i, h in enumerate(header)})
    events = raw.select(
        pl.col("customer_id").cast(pl.String),
        pl.col("date").str.to_date("%Y%m%d").cast(pl.Datetime("us")).alias("timestamp"),
        pl.lit("purchase").alias("event_type"),
        pl.col("dollar_value").cast(pl.Float64).alias("value"),
    ).sort("customer_id", "timestamp", "value")
    customers = (events.group_by("customer_id").agg(pl.col("timestamp").min().dt.date().alias("signup_date"))
                 .sort("customer_id"))
    return customers, events
