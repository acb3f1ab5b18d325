"""The data contract: the canonical `customers` and `events` tables, and their validator.

The validator reports *every* problem at once (table, column, what is wrong, how
many rows, a few examples) and never modifies its input.

Examples
--------
>>> import polars as pl, datetime as dt
>>> customers = pl.DataFrame({"customer_id": ["a"], "signup_date": [dt.date(2024, 1, 1)],
...     "plan": ["basic"], "monthly_price": [20.0], "channel": ["organic"]})
>>> events = pl.DataFrame({"customer_id": ["a"], "timestamp": [dt.datetime(2024, 2, 1)],
...     "event_type": ["promise_broken"], "value": [None]}, schema_overrides={"value": pl.Float64})
>>> validate(customers, events)            # passes silently
>>> validate(customers, events.with_columns(event_type=pl.lit("teleport")))
Traceback (most recent call last):
...
trustml.contract.ContractError: 1 problem in the input:
  - table 'events', column 'event_type': unknown event type (1 row; e.g. 'teleport')...
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl

from trustml.pillars import EVENT_TYPES

__all__ = ["CUSTOMER_COLUMNS", "EVENT_COLUMNS", "Problem", "ContractError", "DataWarnings", "validate", "data_dictionary"]


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "string", "date", "datetime", "number"
    required: bool
    nullable: bool
    description: str


CUSTOMER_COLUMNS = (
    Column("customer_id", "string", True, False, "Unique customer id (pseudonymised in every report)."),
    Column("signup_date", "date", True, False, "Date the customer signed up."),
    Column("plan", "string", True, False, "Segment or plan."),
    Column("monthly_price", "number", True, False, "Current monthly price, >= 0."),
    Column("channel", "string", True, False, "Acquisition channel (e.g. organic, paid, referral)."),
    Column("referred_by", "string", False, True, "customer_id of the referrer, if referred."),
)
EVENT_COLUMNS = (
    Column("customer_id", "string", True, False, "Customer the event belongs to."),
    Column("timestamp", "datetime", True, False, "When it happened."),
    Column("event_type", "string", True, False, "One of the contract's event types (see trustml.pillars)."),
    Column("value", "number", False, True, "Optional numeric value; its meaning depends on the event type."),
)
_MAX_EXAMPLES = 3


@dataclass(frozen=True)
class Problem:
    table: str
    column: str | None
    problem: str
    n_rows: int = 0
    examples: tuple = ()

    def __str__(self) -> str:
        is_mapping = self.table.endswith((".toml", ".yaml", ".yml"))
        where = f"{'file' if '.' in self.table else 'table'} '{self.table}'" + (
            f", {'key' if is_mapping else 'column'} '{self.column}'" if self.column else "")
        rows = ""
        if self.n_rows:
            rows = f" ({self.n_rows} row{'s' if self.n_rows != 1 else ''}"
            rows += f"; e.g. {', '.join(repr(e) for e in self.examples)})" if self.examples else ")"
        return f"{where}: {self.problem}{rows}"


@dataclass
class ContractError(ValueError):
    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        n = len(self.problems)
        return f"{n} problem{'s' if n != 1 else ''} in the input:\n" + "\n".join(f"  - {p}" for p in self.problems)


class DataWarnings(list):
    """Things in the input that are odd but not wrong (time zones converted, duplicate rows, rows left out), named like
    problems (file, column, what, rows, examples). Readers append to it; a report shows it first.

    Example
    -------
    >>> w = DataWarnings()
    >>> w.add("log.csv", "when", "timestamps with UTC offsets converted to UTC")
    >>> print(w)
    1 warning about the input:
      - file 'log.csv', column 'when': timestamps with UTC offsets converted to UTC
    """

    def add(self, table: str, column: str | None, what: str, n_rows: int = 0, examples: tuple = ()) -> None:
        self.append(Problem(table, column, what, n_rows, tuple(examples)))

    def __str__(self) -> str:
        n = len(self)
        if not n:
            return "no warnings about the input"
        return f"{n} warning{'s' if n != 1 else ''} about the input:\n" + "\n".join(f"  - {p}" for p in self)

    def to_frame(self) -> pl.DataFrame:
        """One row per warning: table, column, warning, rows."""
        return pl.DataFrame({"table": [p.table for p in self], "column": [p.column for p in self],
                             "warning": [p.problem for p in self], "rows": [p.n_rows for p in self]},
                            schema={"table": pl.String, "column": pl.String, "warning": pl.String, "rows": pl.Int64})


def _kind_ok(dtype: pl.DataType, kind: str) -> bool:
    if kind == "string":
        return dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum | pl.Categorical)
    if kind == "date":
        return dtype == pl.Date or isinstance(dtype, pl.Datetime)
    if kind == "datetime":
        return isinstance(dtype, pl.Datetime) or dtype == pl.Date
    if kind == "number":
        return dtype.is_numeric() or dtype == pl.Null
    raise AssertionError(kind)


def _rows(df: pl.DataFrame, mask: pl.Expr, show: str | pl.Expr) -> tuple[int, tuple]:
    bad = df.filter(mask)
    return bad.height, tuple(bad.select(show).head(_MAX_EXAMPLES).to_series().to_list())


def _check_columns(df: pl.DataFrame, table: str, columns: tuple[Column, ...]) -> list[Problem]:
    problems = []
    if df.height == 0:
        problems.append(Problem(table, None, "table is empty"))
    schema = df.schema
    for col in columns:
        if col.name not in schema:
            if col.required:
                close = [c for c in schema if c.lower().replace(" ", "_") == col.name or c.lower() == col.name.replace("_", "")]
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                problems.append(Problem(table, col.name, f"required column is missing{hint}"))
            continue
        if not _kind_ok(schema[col.name], col.kind):
            problems.append(Problem(table, col.name, f"wrong type {schema[col.name]}, expected {col.kind}"))
            continue
        if not col.nullable:
            n, ex = _rows(df, pl.col(col.name).is_null(), pl.int_range(pl.len()).alias("row"))
            if n:
                problems.append(Problem(table, col.name, "null values (rows shown by position)", n, ex))
        if col.kind == "number" and schema[col.name].is_float():
            n, ex = _rows(df, ~pl.col(col.name).is_finite() & pl.col(col.name).is_not_null(), col.name)
            if n:
                problems.append(Problem(table, col.name, "NaN or infinite values", n, ex))
    return problems


def validate(
    customers: pl.DataFrame | pl.LazyFrame,
    events: pl.DataFrame | pl.LazyFrame,
    *,
    as_of: dt.date | dt.datetime | None = None,
    extra_event_types: Mapping[str, str] | None = None,
) -> None:
    """Check `customers` and `events` against the contract; raise `ContractError` listing every problem.

    `as_of`: events at or after it are reported (they would leak the future).
    `extra_event_types`: event types beyond the contract's, mapped to pillars by the user.
    The inputs are only read.
    """
    customers = customers.collect() if isinstance(customers, pl.LazyFrame) else customers
    events = events.collect() if isinstance(events, pl.LazyFrame) else events
    problems = _check_columns(customers, "customers", CUSTOMER_COLUMNS)
    problems += _check_columns(events, "events", EVENT_COLUMNS)
    bad_cols = {(p.table, p.column) for p in problems if p.column and ("type" in p.problem or "missing" in p.problem)}

    def usable(table: str, *cols: str) -> bool:
        return all((table, c) not in bad_cols for c in cols)

    if usable("customers", "customer_id"):
        n, ex = _rows(customers, pl.col("customer_id").is_duplicated() & pl.col("customer_id").is_not_null(), "customer_id")
        if n:
            problems.append(Problem("customers", "customer_id", "duplicate ids", n, tuple(dict.fromkeys(ex))))
    if usable("customers", "monthly_price"):
        n, ex = _rows(customers, pl.col("monthly_price") < 0, "monthly_price")
        if n:
            problems.append(Problem("customers", "monthly_price", "negative price", n, ex))
    known, dtype = set(EVENT_TYPES) | set(extra_event_types or {}), events.schema.get("event_type")
    all_known = isinstance(dtype, pl.Enum) and set(dtype.categories.to_list()) <= known
    if usable("events", "event_type") and not all_known:   # an Enum of known types holds no unknown one: no row to read
        et = pl.col("event_type").cast(pl.String)
        n, ex = _rows(events, ~et.is_in(sorted(known)) & et.is_not_null(), et)
        if n:
            problems.append(Problem("events", "event_type", "unknown event type", n, tuple(dict.fromkeys(ex))))
    if as_of is not None and usable("events", "timestamp"):
        limit = pl.lit(as_of).cast(pl.Datetime("us"))
        n, ex = _rows(events, pl.col("timestamp").cast(pl.Datetime("us")) >= limit, pl.col("timestamp").cast(pl.String))
        if n:
            problems.append(Problem("events", "timestamp", f"events at or after the as-of date {as_of}", n, ex))
    if usable("events", "customer_id", "timestamp") and usable("customers", "customer_id", "signup_date"):
        joined = events.select("customer_id", "timestamp").join(
            customers.select("customer_id", "signup_date").unique("customer_id", keep="first"),
            on="customer_id", how="left")
        n, ex = _rows(joined, pl.col("signup_date").is_null() & pl.col("customer_id").is_not_null(), "customer_id")
        if n:
            problems.append(Problem("events", "customer_id", "customer id not in table 'customers'", n, tuple(dict.fromkeys(ex))))
        before = pl.col("timestamp").cast(pl.Datetime("us")) < pl.col("signup_date").cast(pl.Datetime("us"))
        n, ex = _rows(joined, before, pl.col("customer_id"))
        if n:
            problems.append(Problem("events", "timestamp", "events before the customer's signup date", n, tuple(dict.fromkeys(ex))))
    if problems:
        raise ContractError(problems)


def data_dictionary() -> pl.DataFrame:
    """The contract as a table: one row per column of each canonical table, plus event types."""
    rows = [
        {"table": t, "column": c.name, "kind": c.kind, "required": c.required, "description": c.description}
        for t, cols in (("customers", CUSTOMER_COLUMNS), ("events", EVENT_COLUMNS)) for c in cols
    ]
    return pl.DataFrame(rows)
