"""The what-if explorer on a million customers: construction, search and one lever move, in the kernel.

    python benchmarks/explorer_scale.py [--rows 1000000 --customers 2000 --months 12 --seed 0 --repeats 5]

Builds a frame of `--rows` customers cheaply: the latest snapshot of a simulated world (`--customers`
x `--months`, model untuned: trials=0) repeated with new ids, its float features perturbed by a
seeded +-5% so the copies do not tie. Then times, on one process (LightGBM one thread):

* scoring the frame alone (`trained.predict_risk`), for reference;
* `Explorer(trained, frame)` construction (scores the frame, ranks it, explains a seeded sample for the
  cohort means, lists the top 50), and again with `risk=` the scores already computed (a scoring run's);
* the first `find` (builds the pseudonym index: one hash per customer, once), then later finds, median of
  `--repeats`: a pseudonym prefix, a whole pseudonym, a customer's own id (each loads the customer shown);
* one lever move, `set(marketing_contact=...)`, median of `--repeats` (what_if + chart data; what a slider move costs),
  and the same with the survival curve before and after (`survival=`, a hazard model fitted on the simulated table).

Prints the figures and peak memory (max RSS of this process) and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np
import polars as pl


def big_frame(latest: pl.DataFrame, rows: int, seed: int, id_column: str = "customer_id") -> pl.DataFrame:
    """`rows` customers from `latest`: repeated with ids suffixed '-r<copy>', float features x (1 + U(-0.05, 0.05))."""
    reps = -(-rows // latest.height)
    frame = pl.concat([latest.with_columns(pl.col(id_column) + f"-r{r}") for r in range(reps)]).head(rows)
    rng = np.random.default_rng(seed)
    floats = [c for c, t in frame.schema.items() if t.is_float()]
    return frame.with_columns([(pl.col(c) * pl.Series(1 + rng.uniform(-0.05, 0.05, frame.height))).alias(c) for c in floats])


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0



def median_move_ms(explorer, repeats: int) -> float:
    """Median milliseconds of `set(marketing_contact=...)`, moving between the lever's ends (the kernel side of a slider move)."""
    c = explorer.controls["marketing_contact"]
    moves = []
    for i in range(repeats):
        v = c.min if (i % 2 == 0 and c.value != c.min) else c.max
        moves.append(timed(lambda v=v: explorer.set(marketing_contact=v))[1])
    return 1000 * statistics.median(moves)

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--customers", type=int, default=2000)
    p.add_argument("--months", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()

    import trustml as tm
    from trustml.privacy import pseudonymise
    study, t_study = timed(lambda: tm.Study.load(n_customers=a.customers, n_months=a.months, seed=a.seed, trials=0))
    trained, latest = study.trained, study.latest
    frame, t_frame = timed(lambda: big_frame(latest, a.rows, a.seed))
    print(f"simulated {a.customers:,} customers x {a.months} months and trained (trials=0) in {t_study:.1f} s; "
          f"frame of {frame.height:,} customers x {frame.width} columns built in {t_frame:.1f} s", flush=True)

    risk, t_score = timed(lambda: trained.predict_risk(frame))
    print(f"score the frame (trained.predict_risk)        : {t_score:7.2f} s   (reference: construction does this once)", flush=True)
    ex, t_build = timed(lambda: tm.Explorer(trained, frame))
    print(f"Explorer(trained, frame)                       : {t_build:7.2f} s", flush=True)
    ex2, t_build_risk = timed(lambda: tm.Explorer(trained, frame, risk=risk))
    print(f"Explorer(trained, frame, risk=scores)          : {t_build_risk:7.2f} s", flush=True)
    del ex2

    rng = np.random.default_rng(a.seed + 1)
    picks = rng.choice(frame.height, a.repeats + 1, replace=False)
    own = frame["customer_id"].gather(picks).to_list()
    pseud = pseudonymise(own)
    _, t_first = timed(lambda: ex.find(pseud[0][:8]))
    print(f"first find (builds the pseudonym index, once)  : {t_first:7.2f} s   ({ex.found.value})", flush=True)
    prefix = [timed(lambda q=q: ex.find(q[:9]))[1] for q in pseud[1:]]
    whole = [timed(lambda q=q: ex.find(q))[1] for q in pseud[1:]]
    by_own = [timed(lambda q=q: ex.find(q))[1] for q in own[1:]]
    assert int(ex.customer.value) == int(picks[-1]), "find by own id did not show that customer"
    ms = {k: 1000 * statistics.median(v) for k, v in (("prefix", prefix), ("whole", whole), ("own", by_own))}
    print(f"find, pseudonym prefix                         : {ms['prefix']:7.1f} ms  (median of {a.repeats}; incl. loading the first match)")
    print(f"find, whole pseudonym                          : {ms['whole']:7.1f} ms")
    print(f"find, the customer's own id                    : {ms['own']:7.1f} ms", flush=True)

    t_set = median_move_ms(ex, a.repeats)
    print(f"one lever move, set(marketing_contact=...)     : {t_set:7.1f} ms  (median of {a.repeats}; kernel side of a slider move)")
    from trustml.survival import fit_survival
    surv, t_fit = timed(lambda: fit_survival(study.table, horizon=12, seed=a.seed))
    ex3 = tm.Explorer(trained, frame, risk=risk, survival=surv)
    t_set_surv = median_move_ms(ex3, a.repeats)
    print(f"the same with the survival curve (survival=)   : {t_set_surv:7.1f} ms  (hazard model fitted in {t_fit:.1f} s on the "
          f"{a.customers:,}-customer table)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # KiB on Linux
    load = os.getloadavg()[0]
    print(f"peak memory (max RSS) {peak:.2f} GiB; machine: {os.cpu_count()} CPUs, load average {load:.1f}")
    print(json.dumps({"benchmark": "explorer_scale", "rows": frame.height, "customers": a.customers, "months": a.months,
                      "score_s": round(t_score, 2), "construct_s": round(t_build, 2), "construct_with_risk_s": round(t_build_risk, 2),
                      "first_find_s": round(t_first, 2), "find_prefix_ms": round(ms["prefix"], 1), "find_whole_ms": round(ms["whole"], 1),
                      "find_own_id_ms": round(ms["own"], 1), "set_ms": round(t_set, 1), "set_with_survival_ms": round(t_set_surv, 1), "peak_rss_gib": round(peak, 2),
                      "cpus": os.cpu_count(), "load_average": round(load, 2), "python": sys.version.split()[0]}))


if __name__ == "__main__":
    main()
