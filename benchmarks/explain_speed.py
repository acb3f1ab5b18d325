"""Explanation speed: trustml's TreeSHAP tables beside shap's TreeExplainer and LightGBM's pred_contrib.

    python benchmarks/explain_speed.py [--rows 10000,100000,1000000] [--customers 20000 --months 24 --seed 0]
                                       [--cache DIR] [--single 1000]

One run, one model: the default model (`trustml.model.train`) on the simulated world. For each
row count (rows of the world's feature table, repeated when more are asked for): seconds for
`trustml.explain` (tables already built; their one-off build time is printed once), for
`shap.TreeExplainer(booster).shap_values` (explainer built once, outside the timing) and for
`booster.predict(pred_contrib=True)`, the max |difference| of each against pred_contrib, and
the speed-up over shap. Then single-row latency, median over `--single` calls: the table lookup
alone (`TreeShapTables.shap_values` on a 1-row matrix) and all of `explain` on a 1-row frame (the
what-if path, including polars-to-matrix). Ends with one JSON line of the same figures.
Target: >= 10x shap at 100k and 1M rows; one row < 0.2 ms.

`--cache DIR` keeps the feature table (parquet) and the trained model (LightGBM text + JSON)
between runs: building the world and training take minutes, the timings do not need them.
Timings are wall-clock on one thread (LightGBM as trained: num_threads=1).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import shap

from trustml.explanations import explain
from trustml.features import Snapshots, build_features
from trustml.model import TrainedModel, train
from trustml.simulator import simulate
from trustml.treeshap import tables_for


def world_and_model(customers: int, months: int, seed: int, cache: Path | None) -> tuple[pl.DataFrame, TrainedModel]:
    if cache is not None and (cache / "features.parquet").exists() and (cache / "model").exists():
        return pl.read_parquet(cache / "features.parquet"), TrainedModel.load(cache / "model")
    world = simulate(customers, months, seed)
    table = build_features(world.customers, world.events, Snapshots(), as_of=world.as_of)
    trained, _ = train(table)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        table.frame.write_parquet(cache / "features.parquet")
        trained.save(cache / "model")
    return table.frame, trained


def rows_of(frame: pl.DataFrame, n: int) -> pl.DataFrame:
    reps = -(-n // frame.height)
    return (pl.concat([frame] * reps) if reps > 1 else frame).head(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="10000,100000,1000000", help="comma-separated row counts")
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=None, help="folder keeping the feature table and the model between runs")
    ap.add_argument("--single", type=int, default=1000, help="calls for the single-row median")
    args = ap.parse_args()
    sizes = [int(s) for s in args.rows.split(",") if s.strip()]

    frame, trained = world_and_model(args.customers, args.months, args.seed, args.cache)
    booster, n_iter = trained.model.booster_, trained.model.n_iter_
    names = trained.registry.names
    t0 = time.perf_counter()
    tables = tables_for(booster, num_iteration=n_iter)
    t_build = time.perf_counter() - t0
    print(f"model: {n_iter} trees, {booster.num_feature()} features; tables built once in {t_build:.2f} s "
          f"({tables.n_table_trees} trees in {tables.n_groups} tables, {tables.n_fallback_trees} by pred_contrib)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer = shap.TreeExplainer(booster)

    results = []
    for n in sizes:
        rows = rows_of(frame, n)
        X = trained.model.transform_matrix(rows.select(names))
        t0 = time.perf_counter()
        ours = explain(trained, rows)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = explainer.shap_values(X)
        t_shap = time.perf_counter() - t0
        theirs = np.asarray(theirs[1] if isinstance(theirs, list) else theirs)
        t0 = time.perf_counter()
        contrib = booster.predict(X, pred_contrib=True, num_iteration=n_iter)
        t_contrib = time.perf_counter() - t0
        lin, lin_base = trained.model.linear_contributions(X) if hasattr(trained.model, "linear_contributions") else (0.0, 0.0)
        d_ours = float(max(np.abs(ours.values - contrib[:, :-1] - lin).max(), np.abs(ours.base_values - contrib[:, -1] - lin_base).max()))
        d_shap = float(np.abs(theirs - contrib[:, :-1]).max())
        r = {"rows": n, "trustml_s": round(t_ours, 4), "shap_s": round(t_shap, 4), "pred_contrib_s": round(t_contrib, 4),
             "speedup_vs_shap": round(t_shap / t_ours, 1), "trustml_max_abs_diff": d_ours, "shap_max_abs_diff": d_shap}
        results.append(r)
        print(f"{n:>9,} rows: trustml.explain {t_ours:7.2f} s   shap.TreeExplainer {t_shap:7.2f} s   pred_contrib {t_contrib:7.2f} s   "
              f"{t_shap / t_ours:5.1f}x shap   max |diff| vs pred_contrib: trustml {d_ours:.1e}, shap {d_shap:.1e}")
        del ours, theirs, contrib, X, rows

    one = frame.head(1)
    x1 = trained.model.transform_matrix(one.select(names))
    lookup, full = [], []
    for _ in range(args.single):
        t0 = time.perf_counter()
        tables.shap_values(x1)
        lookup.append(time.perf_counter() - t0)
    for _ in range(args.single):
        t0 = time.perf_counter()
        explain(trained, one)
        full.append(time.perf_counter() - t0)
    single = {"lookup_ms": round(1e3 * float(np.median(lookup)), 4), "explain_ms": round(1e3 * float(np.median(full)), 4)}
    print(f"one row, median of {args.single}: table lookup {single['lookup_ms']:.3f} ms, explain() on a 1-row frame {single['explain_ms']:.3f} ms")
    print(json.dumps({"benchmark": "explain_speed", "trees": int(n_iter), "features": booster.num_feature(),
                      "tables_build_s": round(t_build, 3), "fallback_trees": tables.n_fallback_trees,
                      "sizes": results, "single_row": single}))


if __name__ == "__main__":
    main()
