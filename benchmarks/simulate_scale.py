"""Simulator throughput and peak memory, streaming block by block to parquet.

    python benchmarks/simulate_scale.py --customers 1000000 --months 24

Prints customers, events, seconds, events/s and the process's peak resident memory.
"""

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from trustml.simulator import simulate_to_dir

p = argparse.ArgumentParser()
p.add_argument("--customers", type=int, default=1_000_000)
p.add_argument("--months", type=int, default=24)
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    out = simulate_to_dir(a.customers, a.months, a.seed, Path(tmp) / "world", progress=True)
    secs = time.perf_counter() - t0
    meta = json.loads((out / "world.json").read_text())
    size = sum(f.stat().st_size for f in out.rglob("*.parquet"))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"customers {meta['n_customers']:,}  months {a.months}  events {meta['n_events']:,}")
print(f"seconds {secs:.1f}  events/s {meta['n_events'] / secs:,.0f}  parquet {size / 2**20:,.0f} MiB  peak RSS {peak:,.0f} MiB")
