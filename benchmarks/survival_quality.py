"""Time-to-churn quality: trustml's hazard model beside Kaplan-Meier, a Cox model and gradient-boosted survival.

    python benchmarks/survival_quality.py [--customers 5000 --months 30 --seed 0 --horizon 12]
    python benchmarks/survival_quality.py --data ../shared/data/telco_customer_churn/Telco-Customer-Churn.csv --mapping telco
    python benchmarks/survival_quality.py --data ../shared/data/cdnow/CDNOW_master.txt --mapping cdnow --horizon 6

Protocol, one run, one split:

* Snapshots (simulator, event logs): the test snapshot is `horizon` months before the last one, so
  its whole future is observed; every model learns only from outcomes that ended by that date
  (`trustml.survival.temporal_holdout`, `fit_survival(until=)`). Baselines get one row per training
  snapshot (features at the snapshot; time = months to the event of `trustml.survival.person_period`:
  leaving the active set, or for inactivity churn (CDNOW) the start of a silent label window;
  censored at the test date). On the simulator, "truth" is the curve from the simulator's true monthly hazards.
* Flat tables (Telco): a stratified 20% of customers held out (`CustomerSplit`); time = tenure,
  event = the churn flag; curves from tenure 0; `TotalCharges` (about tenure x price) left out of
  every model, as it reveals the tenure.
* Metrics on the test rows, months 1..horizon: Antolini's time-dependent concordance and the IPCW
  integrated Brier score (censoring curve of the test rows), both from `trustml.survival`.
* Baselines: Kaplan-Meier (training rows), scikit-survival's `CoxPHSurvivalAnalysis` (ridge 0.01,
  standardised, median-imputed, one-hot categoricals) and `GradientBoostingSurvivalAnalysis`
  (its defaults: 100 trees of depth 3, learning rate 0.1; seeded), each on at most
  `--max-baseline-rows` seeded training rows; scikit-survival is in the `dev` extra and the
  script says so if it is absent. The last line is one JSON object.
"""

import argparse
import json
import time

import numpy as np
import polars as pl

from trustml import survival as sv
from trustml.model import CustomerSplit

p = argparse.ArgumentParser()
p.add_argument("--customers", type=int, default=5000)
p.add_argument("--months", type=int, default=30)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--horizon", type=int, default=12)
p.add_argument("--data")
p.add_argument("--mapping")
p.add_argument("--max-baseline-rows", type=int, default=10_000)
a = p.parse_args()

t0 = time.perf_counter()
if a.data:
    from trustml.study import Study
    study = Study.from_file(a.data, a.mapping)
    table, world, source = study.table, None, study.source["name"]
else:
    from trustml.contract import validate
    from trustml.features import Snapshots, build_features
    from trustml.simulator import simulate
    world = simulate(a.customers, a.months, a.seed)
    validate(world.customers, world.events, as_of=world.as_of)
    table = build_features(world.customers, world.events, Snapshots(), as_of=world.as_of)
    source = f"simulator ({a.customers:,} customers, {a.months} months, seed {a.seed})"
print(f"data: {source}; {table.frame.height:,} feature rows ({time.perf_counter() - t0:.1f} s)")

exclude = [c for c in ("TotalCharges",) if c in table.registry.names] if table.is_flat else []
t1 = time.perf_counter()
if table.is_flat:
    train, _, test = CustomerSplit(test_size=0.2, seed=a.seed).frames(table.labelled())
    H = int(table.frame["tenure"].max())
    surv = sv.fit_survival(table, H, frame=train, exclude=exclude, seed=a.seed)
    pred = surv.survival(test, H, start=0)
    obs = sv.observed_outcomes(table, test, H)
    tr_obs = sv.observed_outcomes(table, train, H)
    split_note = f"customers: {train.height:,} train, {test.height:,} test; curves from tenure 0 over {H} months"
else:
    H = a.horizon
    test_date, test = sv.temporal_holdout(table, H)
    train = table.frame.filter(pl.col("snapshot_date") < test_date)
    surv = sv.fit_survival(table, H, frame=train, until=test_date, seed=a.seed)
    pred = surv.survival(test)
    obs = sv.observed_outcomes(table, test, H)
    pp = sv.person_period(table, H, frame=train, until=test_date)
    tr_obs = pp.group_by("customer_id", "snapshot_date", maintain_order=True).agg(
        time=pl.col("months_ahead").max(), event=pl.col("event").max())
    train = train.join(tr_obs.select("customer_id", "snapshot_date"), on=["customer_id", "snapshot_date"], how="semi", maintain_order="left")
    tr_obs = train.select("customer_id", "snapshot_date").join(tr_obs, on=["customer_id", "snapshot_date"], how="left", maintain_order="left")
    split_note = f"test snapshot {test_date} ({test.height:,} customers), trained on outcomes to it"
fit_s = time.perf_counter() - t1
print(f"split: {split_note}; hazard model: {surv.metadata['person_period_rows']:,} customer-months, "
      f"{surv.metadata['rounds']} trees, settings chosen on held-out data {surv.metadata['params']}, {fit_s:.1f} s")

keep = obs["time"].to_numpy() > 0
time_, event = obs["time"].to_numpy()[keep], obs["event"].to_numpy()[keep]
curves = {"trustml (LightGBM hazard)": pred[keep]}
tt, te = tr_obs["time"].to_numpy(), tr_obs["event"].to_numpy()
curves["Kaplan-Meier"] = np.tile(sv.kaplan_meier(tt[tt > 0], te[tt > 0], H), (int(keep.sum()), 1))

notes = []
try:
    from sksurv.ensemble import GradientBoostingSurvivalAnalysis
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv
except ImportError as e:
    notes.append(f"scikit-survival not installed ({e}): Cox and gradient-boosted survival left out (pip install -e '.[dev]')")
else:
    feats = [f for f in surv.features]

    def design(frame: pl.DataFrame, ref: pl.DataFrame) -> np.ndarray:
        cols = []
        for f in feats:
            if ref.schema[f] in (pl.String, pl.Categorical):
                for level in sorted(ref[f].cast(pl.String).drop_nulls().unique().to_list())[1:]:
                    cols.append((frame[f].cast(pl.String) == level).fill_null(False).cast(pl.Float64).to_numpy())
            else:
                x = frame[f].cast(pl.Float64).to_numpy()
                cols.append(np.where(np.isnan(x), np.nanmedian(ref[f].cast(pl.Float64).to_numpy()), x))
        return np.column_stack(cols)

    ok = tt > 0
    idx = np.nonzero(ok)[0]
    if idx.size > a.max_baseline_rows:
        idx = np.sort(np.random.default_rng(a.seed).choice(idx, a.max_baseline_rows, replace=False))
        notes.append(f"Cox and GBSA trained on a seeded sample of {a.max_baseline_rows:,} of {int(ok.sum()):,} training rows")
    ref = train[idx]
    Xtr, Xte = design(ref, ref), design(test.filter(pl.Series(keep)), ref)
    mu, sd = Xtr.mean(axis=0), Xtr.std(axis=0)
    sd[sd == 0] = 1
    Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
    y = Surv.from_arrays(te[idx].astype(bool), tt[idx].astype(float))
    k = np.arange(1, H + 1, dtype=float)

    def at_months(fns) -> np.ndarray:
        return np.array([fn(np.clip(k, fn.domain[0], fn.domain[1])) for fn in fns])

    for name, est in (("Cox (scikit-survival)", CoxPHSurvivalAnalysis(alpha=0.01)),
                      ("gradient-boosted survival (scikit-survival)",
                       GradientBoostingSurvivalAnalysis(n_estimators=100, max_depth=3, learning_rate=0.1, random_state=a.seed))):
        t2 = time.perf_counter()
        est.fit(Xtr, y)
        curves[name] = at_months(est.predict_survival_function(Xte))
        print(f"{name}: fitted in {time.perf_counter() - t2:.1f} s")

if world is not None:
    truth = sv.true_survival(world, test, H)[keep]
    if np.isnan(truth).any():
        notes.append("truth: some test months are outside the simulation")
    else:
        curves["truth (simulator's hazards)"] = truth

quality = sv.survival_quality(curves, time_, event)
with pl.Config(tbl_hide_dataframe_shape=True, tbl_width_chars=160, float_precision=4):
    print(quality)
for n in notes:
    print("note:", n)
q = dict(zip(quality["model"], quality["integrated_brier"], strict=True))
ours = q["trustml (LightGBM hazard)"]
rivals = [v for k, v in q.items() if not k.startswith(("trustml", "truth"))]
truth_ibs = q.get("truth (simulator's hazards)")
best = bool(ours <= min(rivals)) if rivals else None
print(f"target: best integrated Brier of the models ({'met' if best else 'NOT met'})"
      + (f"; within 10% of the truth's: {ours / truth_ibs - 1:+.1%} ({'met' if ours <= 1.1 * truth_ibs else 'NOT met'})" if truth_ibs else ""))
print(json.dumps({"benchmark": "survival_quality", "data": source, "horizon": H, "test_rows": int(keep.sum()),
                  "integrated_brier": {k: round(v, 5) for k, v in q.items()},
                  "c_td": {r["model"]: round(r["c_td"], 4) for r in quality.iter_rows(named=True)},
                  "best_of_models": best, "vs_truth": None if truth_ibs is None else round(ours / truth_ibs - 1, 4),
                  "seconds": round(time.perf_counter() - t0, 1)}))
