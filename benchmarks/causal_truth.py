"""Causal lever effects (double machine learning) vs the model's what-if vs the simulator's truth.

    python benchmarks/causal_truth.py                       # the default world: 20,000 customers x 24 months, seed 0
    python benchmarks/causal_truth.py --customers 6000 --seed 1 --no-model   # smaller, another world
    python benchmarks/causal_truth.py --customers 6000 --ablation            # also without the revealed-trait controls
    python benchmarks/causal_truth.py --no-model --max-rows 60000           # on the report's sample (study.CAUSAL_MAX_ROWS)

Per lever: the model's what-if (as `whatif_vs_truth` computes it, on the 200 riskiest test rows),
the DML estimate with its 95% interval and the true effect on all labelled rows (the policy applied
to the whole history, common random numbers), and per-row Spearman of causal vs true effects.
Targets: |causal - true| <= 25% of |true| for every lever; truth inside the interval for most;
Spearman >= 0.5 for every lever. A missed target is diagnosed from the measured columns (oracle fit
on the estimator's own exposures, the interval). `--ablation` re-estimates each lever without the
revealed per-customer traits (`causal.lever_traits`): the difference is the survivor selection they
correct. `--max-rows N` estimates on a seeded sample of whole customers of at most N labelled rows, as
`trustml report` does beyond `study.CAUSAL_MAX_ROWS`: the price in accuracy of a smaller, faster sample.
Ends with one JSON line.
"""

import argparse
import json
import time

import polars as pl

from trustml.causal import causal_vs_truth, lever_effects, simulator_truth
from trustml.features import Snapshots, build_features
from trustml.model import sample_customers, train
from trustml.simulator import simulate
from trustml.whatif import whatif_vs_truth

ap = argparse.ArgumentParser()
ap.add_argument("--customers", type=int, default=20_000)
ap.add_argument("--months", type=int, default=24)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--no-model", action="store_true", help="skip the churn model's what-if column (faster)")
ap.add_argument("--levers", default=None, help="comma-separated levers (default: all)")
ap.add_argument("--ablation", action="store_true", help="also estimate without the revealed-trait controls")
ap.add_argument("--max-rows", type=int, default=None, help="a seeded sample of whole customers of at most this many labelled rows")
args = ap.parse_args()

t0 = time.perf_counter()
world = simulate(args.customers, args.months, args.seed)
table = build_features(world.customers, world.events, Snapshots(), as_of=world.as_of)
rows = table.labelled()
if args.max_rows is not None:
    rows = sample_customers(rows, args.max_rows, args.seed)[0]   # as the report's Study.causal_rows
levers = args.levers.split(",") if args.levers else None
t1 = time.perf_counter()
effects = lever_effects(rows, world.events, table.registry, levers, seed=args.seed, progress=True)
effect_seconds = time.perf_counter() - t1
truth = simulator_truth(rows, n_customers=args.customers, n_months=args.months, seed=args.seed, levers=list(effects))
result = causal_vs_truth(effects, truth)
if args.ablation:
    plain = causal_vs_truth(lever_effects(rows, world.events, table.registry, list(effects), seed=args.seed, traits=False), truth)
    result = result.join(plain.select("lever", pl.col("causal_points").alias("no_traits_points"),
                                      pl.col("rel_error").alias("no_traits_rel_error")), on="lever", how="left")
if not args.no_model:
    trained, split = train(table, trials=0)
    test = split.frames(rows)[2]
    model = whatif_vs_truth(trained, test, n_customers=args.customers, n_months=args.months, seed=args.seed)["by_lever"]
    result = result.join(model.select("lever", pl.col("model_mean_points").alias("model_top200_points"),
                                      pl.col("true_mean_points").alias("true_top200_points"),
                                      pl.col("spearman").alias("model_spearman_top200")), on="lever", how="left")
seconds = time.perf_counter() - t0
print(f"{rows.height:,} labelled rows; causal effects {effect_seconds:.1f} s; {seconds:.1f} s in all")
with pl.Config(tbl_hide_dataframe_shape=True, tbl_width_chars=200, tbl_cols=20, float_precision=3):
    cols = ["lever", "causal_points", "ci_low_points", "ci_high_points", "true_points", "rel_error", "truth_in_ci", "spearman",
            "oracle_fit_points", "oracle_fit_r2",
            "share_extreme_propensity", "share_extreme_dose", "exposure_r2"]
    print(result.select(cols + [c for c in ("no_traits_points", "no_traits_rel_error") if c in result.columns]))
    for r in result.filter(pl.col("diagnosis") != "").iter_rows(named=True):
        print(f"{r['lever']}: {r['diagnosis']}")
    if "model_top200_points" in result.columns:
        print("model what-if on the 200 riskiest test rows (association) vs truth on the same rows:")
        print(result.select("lever", "model_top200_points", "true_top200_points", "model_spearman_top200"))
ok_ate = bool((result["rel_error"] <= 0.25).all())
ok_rho = bool((result["spearman"] >= 0.5).all())
print(json.dumps({"benchmark": "causal_truth", "customers": args.customers, "months": args.months, "seed": args.seed,
                  "rows": rows.height, "max_rows": args.max_rows, "seconds": round(seconds, 1),
                  "effect_seconds": round(effect_seconds, 1),
                  "levers": {r["lever"]: {"causal_points": round(r["causal_points"], 3), "ci_points": [round(r["ci_low_points"], 3), round(r["ci_high_points"], 3)],
                                          "true_points": round(r["true_points"], 3), "rel_error": round(r["rel_error"], 3),
                                          "truth_in_ci": r["truth_in_ci"], "spearman": round(r["spearman"], 3),
                                          **({"no_traits_points": round(r["no_traits_points"], 3)} if r.get("no_traits_points") is not None else {}),
                                          **({"model_top200_points": round(r["model_top200_points"], 3)} if r.get("model_top200_points") is not None else {})}
                             for r in result.iter_rows(named=True)},
                  "targets": {"ate_within_25pct_all": ok_ate, "truth_in_ci": int(result["truth_in_ci"].sum()),
                              "spearman_ge_0_5_all": ok_rho}}))
