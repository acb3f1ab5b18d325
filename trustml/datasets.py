"""Readers for the real public datasets used in tests, benchmarks and notebooks.

They turn each file into the contract's tables through the mapping shipped for it; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

__all__ = ["read_cdnow"]


def read_cdnow(path: str | Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """CDNOW purchases (`CDNOW_master.txt`: customer_id date(yyyymmdd) number_of_cds dollar_value)
    as contract tables: customers (signup = first purchase) and `purchase` events (value = dollars).
    Read with the shipped mapping `trustml/mappings/cdnow.toml`, as `trustml report --mapping cdnow` does.
    """
    from trustml.mapping import event_tables, load_mapping, read_data
    path = Path(path)
    if path.is_dir():
        path = path / "CDNOW_master.txt"
    m = load_mapping("cdnow")
    customers, events, *_ = event_tables(read_data(path, m), m, source=str(path))
    return customers, events
