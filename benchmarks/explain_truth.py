"""Explanations against the simulator's truth, on the default world's test snapshots.

    python benchmarks/explain_truth.py
"""

import json

import polars as pl

from trustml.explanations import truthfulness
from trustml.features import Snapshots, build_features
from trustml.model import train
from trustml.simulator import simulate

world = simulate(20_000, 24, 0)
table = build_features(world.customers, world.events, Snapshots(), as_of=world.as_of)
trained, split = train(table)
test = split.frames(table.labelled())[2]
r = truthfulness(trained, test, world.truth, n_customers=20_000, n_months=24, seed=0)
with pl.Config(tbl_hide_dataframe_shape=True, tbl_width_chars=160, fmt_str_lengths=90, tbl_rows=40):
    print(r["pillars"])
    print(f"Spearman(mean |SHAP| per pillar, true mean |effect|) = {r['spearman']:.3f}  (target >= 0.9)")
    print(f"top lever agreement, 200 riskiest customers = {r['agreement']:.1%}")
    print(r["disagreements"].select("customer", pl.col("risk").round(3), "model_top_lever", "true_best_lever",
                                    pl.col("true_risk_drop_points").round(2), "reason"))
print(json.dumps({"benchmark": "explain_truth", "spearman_pillars": round(r["spearman"], 4), "top_lever_agreement": round(r["agreement"], 4)}))
