"""Latency of one what-if slider update's compute path (not a timed test).

    python benchmarks/whatif_latency.py [--customers 20000 --months 24 --updates 500]

The compute path is what the explorer runs per slider move: apply the lever, re-score the
customer, exact TreeSHAP before and after, pillar sums and reason codes (`trustml.whatif.what_if`).
Drawing the chart is timed separately. Target: p99 < 50 ms.
"""

import argparse
import time

import numpy as np

from trustml.explorer import Explorer
from trustml.study import Study
from trustml.whatif import levers, what_if

p = argparse.ArgumentParser()
p.add_argument("--customers", type=int, default=20_000)
p.add_argument("--months", type=int, default=24)
p.add_argument("--updates", type=int, default=500)
a = p.parse_args()
study = Study.load(n_customers=a.customers, n_months=a.months, seed=0)
trained, latest = study.trained, study.latest
lvs = [lv for lv in levers(trained.registry) if not lv.categorical]
rng = np.random.default_rng(0)
rows = rng.integers(0, latest.height, a.updates)
what_if(trained, latest[0], {})  # warm-up: builds the explainer once, as the explorer does on load
times = []
for i, r in enumerate(rows):
    lv = lvs[i % len(lvs)]
    value = float(rng.uniform(lv.low, lv.high))
    t0 = time.perf_counter()
    what_if(trained, latest[int(r)], {lv.name: value})
    times.append(1000 * (time.perf_counter() - t0))
t = np.array(times)
print(f"{a.updates} slider updates on {latest.height:,} customers ({trained.model.n_iter_} trees, {len(trained.registry)} features)")
print(f"compute path: p50 {np.percentile(t, 50):.1f} ms  p99 {np.percentile(t, 99):.1f} ms  max {t.max():.1f} ms  (target p99 < 50 ms)")
ex = Explorer(trained, latest)
name = "marketing_contact"
draw = []
for v in np.linspace(0, 12, 50):
    t0 = time.perf_counter()
    ex.set(**{name: float(v)})
    draw.append(1000 * (time.perf_counter() - t0))
d = np.array(draw)
print(f"full widget update incl. chart PNG: p50 {np.percentile(d, 50):.1f} ms  p99 {np.percentile(d, 99):.1f} ms")
