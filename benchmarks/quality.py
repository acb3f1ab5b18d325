"""Model quality on data trustml was not tuned on: trustml beside a plain LGBMClassifier() and logistic regression.

Protocol (one run, identical folds for every model):
- flat tables (one row per customer, e.g. Telco): stratified 5-fold cross-validation over customers; each
  fold's models see only that fold's training customers (trustml tunes and calibrates inside them);
  ROC-AUC is computed on the pooled out-of-fold predictions;
- snapshots over time (event logs, the simulator): trustml's own temporal split; the baselines are fitted
  on the same training snapshots and scored on the same test snapshots.
95% intervals come from 500 bootstrap resamples of customers; the difference trustml - best baseline is
paired (same resamples). Target: trustml >= the better baseline - 0.003 on every data set.

    python benchmarks/quality.py                                     # Telco, CDNOW and the simulator
    python benchmarks/quality.py --data FILE --mapping M             # your own data
    python benchmarks/quality.py --sets simulated --customers 20000  # one set, larger
"""

import argparse
import json
import sys
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
from sklearn.model_selection import StratifiedKFold

from trustml.evaluate import bootstrap, fit_logistic, interval
from trustml.features import FeatureTable
from trustml.model import ChurnModel, CustomerSplit, train
from trustml.study import Study

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {"telco": (SHARED / "telco_customer_churn" / "Telco-Customer-Churn.csv", "telco"),
        "cdnow": (SHARED / "cdnow" / "CDNOW_master.txt", "cdnow")}


def plain_lightgbm(train_rows: pl.DataFrame, test_rows: pl.DataFrame, names: list[str]) -> np.ndarray:
    """lightgbm.LGBMClassifier() with its own defaults, on the same columns (categoricals as LightGBM categories)."""
    enc = ChurnModel()
    Xtr = enc._matrix(train_rows.select(names), fit=True)
    Xte = enc._matrix(test_rows.select(names), fit=False)
    cat = [i for i, n in enumerate(names) if n in enc.categories_]
    clf = lgb.LGBMClassifier(random_state=0, n_jobs=1, verbose=-1)
    clf.fit(Xtr, train_rows["churned"].to_numpy(), categorical_feature=cat or "auto")
    return clf.predict_proba(Xte)[:, 1]


def evaluate_set(name: str, table: FeatureTable, trials: int) -> dict:
    reg = table.registry
    lab = table.labelled()
    t0 = time.perf_counter()
    if table.is_flat:
        y = lab["churned"].to_numpy()
        preds = {k: np.zeros(len(y)) for k in ("trustml", "LGBMClassifier()", "logistic regression")}
        for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(y)), y):
            sub = FeatureTable(lab[tr], reg, table.snapshots, table.as_of, table.dropped)
            trained, _ = train(sub, CustomerSplit(test_size=0.0), trials=trials)
            preds["trustml"][te] = trained.predict_risk(lab[te])
            preds["LGBMClassifier()"][te] = plain_lightgbm(lab[tr], lab[te], reg.names)
            preds["logistic regression"][te] = fit_logistic(lab[tr], reg.names, reg.categorical).predict_proba(
                lab[te].select(reg.names).to_pandas())[:, 1]
        groups, protocol = lab["customer_id"].to_numpy(), "stratified 5-fold cross-validation, pooled out-of-fold"
    else:
        trained, split = train(table, trials=trials)
        tr, _, te = split.frames(lab)
        y = te["churned"].to_numpy()
        preds = {"trustml": trained.predict_risk(te), "LGBMClassifier()": plain_lightgbm(tr, te, reg.names),
                 "logistic regression": fit_logistic(tr, reg.names, reg.categorical).predict_proba(te.select(reg.names).to_pandas())[:, 1]}
        groups, protocol = te["customer_id"].to_numpy(), "temporal split: latest labelled snapshots held out"
    seconds = time.perf_counter() - t0
    draws = bootstrap(y, preds, groups=groups, n_boot=500, seed=0)
    from sklearn.metrics import roc_auc_score
    auc = {k: float(roc_auc_score(y, p)) for k, p in preds.items()}
    best = max(("LGBMClassifier()", "logistic regression"), key=auc.get)
    diff = draws["trustml"] - draws[best]
    out = {"set": name, "protocol": protocol, "rows": int(len(y)), "churners": int(y.sum()), "seconds": round(seconds, 1)}
    for k in preds:
        lo, hi = interval(draws[k])
        out[k] = {"roc_auc": round(auc[k], 4), "lo": round(lo, 4), "hi": round(hi, 4)}
    dlo, dhi = interval(diff)
    out["best_baseline"] = best
    out["trustml_minus_best"] = {"diff": round(auc["trustml"] - auc[best], 4), "lo": round(dlo, 4), "hi": round(dhi, 4)}
    out["target_met"] = bool(auc["trustml"] >= auc[best] - 0.003)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data")
    ap.add_argument("--mapping")
    ap.add_argument("--sets", default="telco,cdnow,simulated")
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--trials", type=int, default=20)
    a = ap.parse_args()
    jobs = {}
    if a.data:
        jobs[Path(a.data).name] = lambda: Study.load(a.data, a.mapping).table
    else:
        for s in a.sets.split(","):
            if s == "simulated":
                jobs[f"simulated {a.customers:,} x {a.months} months"] = lambda: Study.load(n_customers=a.customers, n_months=a.months).table
            elif SETS[s][0].exists():
                jobs[s] = (lambda s=s: Study.load(*SETS[s]).table)
            else:
                print(f"{s}: {SETS[s][0]} not found; skipped", file=sys.stderr)
    results = []
    for name, load in jobs.items():
        r = evaluate_set(name, load(), a.trials)
        results.append(r)
        print(f"\n{name} ({r['protocol']}; {r['rows']:,} rows, {r['churners']:,} churners; trustml {r['seconds']} s)")
        for k in ("trustml", "LGBMClassifier()", "logistic regression"):
            print(f"  {k:<22} ROC-AUC {r[k]['roc_auc']:.4f}  95% [{r[k]['lo']:.4f}, {r[k]['hi']:.4f}]")
        d = r["trustml_minus_best"]
        print(f"  trustml - {r['best_baseline']}: {d['diff']:+.4f}  95% [{d['lo']:+.4f}, {d['hi']:+.4f}]  "
              f"target (>= -0.003): {'met' if r['target_met'] else 'MISSED'}")
    print(json.dumps({"benchmark": "quality", "trials": a.trials, "results": results}))


if __name__ == "__main__":
    main()
