"""Model quality on the simulated default world: test AUC beside the oracle's, baselines, backtest, timing.

    python benchmarks/model_quality.py [--customers 20000 --months 24 --seed 0]
"""

import argparse
import json
import time

import polars as pl

from trustml.evaluate import backtest, compare_models
from trustml.features import Snapshots, build_features
from trustml.model import train
from trustml.simulator import simulate

p = argparse.ArgumentParser()
p.add_argument("--customers", type=int, default=20_000)
p.add_argument("--months", type=int, default=24)
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
world = simulate(a.customers, a.months, a.seed)
table = build_features(world.customers, world.events, Snapshots(), as_of=world.as_of)
results = {}
for monotone in (False, True):
    t0 = time.perf_counter()
    trained, split = train(table, monotone=monotone)
    secs = time.perf_counter() - t0
    test = split.frames(table.labelled())[2]
    oracle = test.select("customer_id", pl.col("snapshot_date").alias("month_start")).join(
        world.truth, on=["customer_id", "month_start"], how="left", maintain_order="left")["churn_prob"].to_numpy()
    comp = compare_models(table, split, trained, oracle=oracle)
    auc = dict(zip(comp["model"], comp["roc_auc"], strict=True))
    print(f"\nmonotone={monotone}: trained in {secs:.1f} s ({trained.model.n_iter_} trees, {split.frames(table.labelled())[0].height:,} rows)")
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_width_chars=160):
        print(comp)
    print(f"test AUC {auc['lightgbm (calibrated)']:.4f}  oracle AUC {auc['oracle (true probability)']:.4f}  "
          f"gap {auc['oracle (true probability)'] - auc['lightgbm (calibrated)']:.4f}  (target <= 0.01)")
    results["monotone" if monotone else "default"] = {"seconds": round(secs, 1), "roc_auc": auc}
print("\nrolling-origin backtest (3 folds of 2 snapshots):")
folds = backtest(table, folds=3, test_snapshots=2)
with pl.Config(tbl_hide_dataframe_shape=True, tbl_width_chars=160):
    print(folds.select("fold", "train_until", "test_from", "test_to", "roc_auc", "pr_auc", "brier", "top_decile_lift"))
print(json.dumps({"benchmark": "model_quality", "results": results, "backtest_roc_auc": folds["roc_auc"].to_list()}))
