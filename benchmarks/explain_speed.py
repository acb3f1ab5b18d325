"""Explanation speed: trustml.explain beside shap's own TreeExplainer on the same model, same run.

    python benchmarks/explain_speed.py
"""

import time
import warnings

import numpy as np
import shap

from trustml.explanations import explain
from trustml.features import Snapshots, build_features
from trustml.model import train
from trustml.simulator import simulate

world = simulate(20_000, 24, 0)
table = build_features(world.customers, world.events, Snapshots(), as_of=world.as_of)
trained, _ = train(table)
for n in (10_000, 100_000):
    rows = table.frame.head(n)
    t0 = time.perf_counter()
    ours = explain(trained, rows)
    t_ours = time.perf_counter() - t0
    X = trained.model.transform_matrix(rows.select(trained.registry.names))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = shap.TreeExplainer(trained.model.booster_).shap_values(X)
    t_shap = time.perf_counter() - t0
    print(f"{n:>7,} rows: trustml.explain {t_ours:6.2f} s   shap.TreeExplainer {t_shap:6.2f} s   "
          f"max |difference| {np.abs(ours.values - np.asarray(theirs)).max():.2e}")
