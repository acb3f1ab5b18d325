"""Feature-building throughput: trustml (polars, lazy) beside a straightforward pandas version of the
same features, in the same run, with 12 monthly snapshots.

    python benchmarks/features_speed.py --events 10000000 [--pandas]
    trustml simulate --customers 390000 --out /tmp/w50 && python benchmarks/features_speed.py --data /tmp/w50 --streaming

With --data the log is read from parquet written by another process, so peak memory is the
feature build alone; it is printed beside the size the events table would take in memory.

Events come from the simulator (customers scaled to reach the requested count). Prints seconds,
events/s per snapshot pass (events x snapshots / seconds) and peak memory; with --pandas also the
pandas figures and the largest difference between the two tables.
"""

import argparse
import datetime as dt
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from trustml.features import DEFAULT_SPEC, Snapshots, build_features
from trustml.simulator import read_world, simulate_to_dir

p = argparse.ArgumentParser()
p.add_argument("--events", type=int, default=10_000_000)
p.add_argument("--pandas", action="store_true", help="also run the pandas implementation (slow)")
p.add_argument("--streaming", action="store_true", help="polars streaming engine, reading parquet lazily")
p.add_argument("--data", help="a folder written by `trustml simulate` (default: simulate here, in a temp folder)")
a = p.parse_args()
customers_needed = int(a.events / 129.2)  # the default world makes ~129 events per customer over 24 months
snaps = Snapshots(every="1mo", start=dt.date(2025, 1, 1), end=dt.date(2025, 12, 1))


def pandas_features(customers, events, dates):
    """The same features, written the obvious pandas way: filter per snapshot, group by per feature."""
    import pandas as pd
    events = events.copy()
    events["event_type"] = events["event_type"].astype(str)
    out = []
    for d in dates:
        d = pd.Timestamp(d)
        past = events[events["timestamp"] < d]
        alive = customers[customers["signup_date"] < d]
        base = alive[["customer_id"]].set_index("customer_id")
        tenure = ((d - pd.to_datetime(alive["signup_date"])).dt.total_seconds() / 86400).set_axis(alive["customer_id"])
        for s in DEFAULT_SPEC:
            if s.agg == "attribute":
                continue
            w = past[past["timestamp"] >= d - pd.Timedelta(days=s.window_days)]
            sel = w[w["event_type"].isin(s.events)]
            g = sel.groupby("customer_id")
            if s.agg == "count":
                col = g.size().astype(float)
            elif s.agg in ("sum", "mean", "max"):
                col = getattr(g["value"], s.agg)()
            elif s.agg == "days_since":
                col = (d - g["timestamp"].max()).dt.total_seconds() / 86400
            elif s.agg == "decayed":
                wts = 0.5 ** (((d - sel["timestamp"]).dt.total_seconds() / 86400) / s.half_life_days)
                col = wts.groupby(sel["customer_id"]).sum()
            elif s.agg == "share":
                num = g.size()
                den = num.add(w[w["event_type"].isin(s.denominator)].groupby("customer_id").size(), fill_value=0)
                col = (num.reindex(den.index, fill_value=0) / den).where(den > 0)
            elif s.agg == "trend":
                recent = sel[sel["timestamp"] >= d - pd.Timedelta(days=30)].groupby("customer_id").size()
                avg = g.size() * 30.0 / s.window_days
                col = recent.reindex(avg.index, fill_value=0) / avg
            base[s.name] = col
            fill = 0.0 if s.agg in ("count", "sum", "decayed") else (float(s.window_days) if s.agg == "days_since" else None)
            if fill is not None:
                base[s.name] = base[s.name].fillna(fill)
            if s.agg == "days_since":  # no event for longer than the customer has existed is "since signup", not the window
                base[s.name] = np.minimum(base[s.name], tenure.reindex(base.index))
        base["snapshot_date"] = d
        out.append(base.reset_index())
    return pd.concat(out, ignore_index=True)


def in_memory_mib(folder: Path, n_events: int) -> float:
    """What the whole events table would take in memory: one parquet part's in-memory size, scaled."""
    part = sorted((folder / "events").glob("*.parquet"))[0]
    sample = pl.read_parquet(part)
    return sample.estimated_size() / sample.height * n_events / 2**20


with tempfile.TemporaryDirectory() as tmp:
    world = Path(a.data) if a.data else simulate_to_dir(customers_needed, 24, 0, Path(tmp) / "w")
    customers, events = read_world(world, lazy=True)
    n_events = events.select(pl.len()).collect().item()
    n_customers = customers.select(pl.len()).collect().item()
    print(f"{n_events:,} events, {n_customers:,} customers, 12 monthly snapshots; "
          f"the events table would take {in_memory_mib(world, n_events):,.0f} MiB in memory")
    t0 = time.perf_counter()
    if a.streaming:
        table = build_features(customers, events, snaps, streaming=True)
    else:
        table = build_features(customers.collect(), events.collect(), snaps)
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"trustml/polars{' streaming' if a.streaming else ''}: {secs:.1f} s, {n_events * 12 / secs:,.0f} events/s per snapshot pass, "
          f"{table.frame.height:,} rows ({table.frame.estimated_size() / 2**20:,.0f} MiB), peak RSS so far {peak:,.0f} MiB")
    if a.pandas:
        cpd, epd = customers.collect().to_pandas(), events.collect().to_pandas()
        t0 = time.perf_counter()
        ref = pandas_features(cpd, epd, table.frame["snapshot_date"].unique().sort().to_list())
        psecs = time.perf_counter() - t0
        print(f"pandas: {psecs:.1f} s, {n_events * 12 / psecs:,.0f} events/s per snapshot pass; polars is {psecs / secs:.1f}x faster")
        ref = pl.from_pandas(ref).with_columns(pl.col("snapshot_date").cast(pl.Date))
        j = table.frame.join(ref, on=["customer_id", "snapshot_date"], how="inner", suffix="_pd")
        diffs = {c: float(np.nanmax(np.abs(j[c].to_numpy() - j[f"{c}_pd"].to_numpy()))) for c in ref.columns
                 if c not in ("customer_id", "snapshot_date") and f"{c}_pd" in j.columns}
        print(f"rows matched {j.height:,} of {ref.height:,}; largest difference between the two tables {max(diffs.values()):.2e}")
    figures = {"benchmark": "features_speed", "events": n_events, "customers": n_customers, "streaming": bool(a.streaming),
               "polars_s": round(secs, 2), "events_per_s": round(n_events * 12 / secs), "rows": table.frame.height, "peak_rss_mib": round(peak)}
    if a.pandas:
        figures.update(pandas_s=round(psecs, 2), speedup=round(psecs / secs, 2), max_difference=max(diffs.values()))
    print(json.dumps(figures))
