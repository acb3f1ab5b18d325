"""Drift alarms on the simulator: a policy change must be caught, a stable world must stay quiet.

Protocol, per seed: simulate two worlds with the same seed, one as observed ("stable") and one
where, from month `--change-month` on, price rises are more frequent and mostly unannounced
("changed": `SimConfig.changes`). In each, train on what was known before month `--train-months`
(`trustml.monitor.next_month`; no tuning, `TRAIN_DEFAULTS`), take the latest snapshot before the
cut as the drift reference (churn rate and AUC from the test split), and check month
`--score-month` (labels included) with `trustml.monitor.drift` at the default thresholds
(PSI warn 0.1, alarm 0.25; pillar PSI = max of its features).

Printed: one row per seed and world; then one JSON line with
  false_alarm_rate   stable worlds with any pillar or risk-distribution PSI alarm
  false_warn_rate    stable worlds with any pillar or risk PSI at warn or above (context pillars included:
                     the simulated customer base ages, so tenure moves month to month)
  false_warn_rate_trust_pillars  stable worlds with a trust pillar at warn or above
  perf_alarm_rate_stable  stable worlds whose realised churn rate or AUC is in alarm
  detection_rate     changed worlds whose Transparency pillar is at warn or above
  transparency_alarm_rate  changed worlds whose Transparency pillar is in alarm
  wrong_pillar_rate  changed worlds with a trust pillar other than Transparency at warn or above

    python benchmarks/drift_alarms.py --seeds 10 --customers 3000
    python benchmarks/drift_alarms.py --seeds 2 --customers 1500       # a quick look
"""

import argparse
import json
import time

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from trustml.model import train
from trustml.monitor import Reference, Thresholds, drift, next_month
from trustml.pillars import TRUST_PILLARS
from trustml.simulator import SimConfig

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--seeds", type=int, default=10)
p.add_argument("--customers", type=int, default=3000)
p.add_argument("--months", type=int, default=24)
p.add_argument("--train-months", type=int, default=18, help="train on what was known before this month")
p.add_argument("--score-month", type=int, default=21, help="the later month scored and checked")
p.add_argument("--change-month", type=int, default=18, help="the changed world's policy changes from this month")
p.add_argument("--rise-share", type=float, default=0.12, help="share of customer-months with a price rise after the change (0.04 before)")
p.add_argument("--unannounced", type=float, default=0.9, help="share of price rises made without notice after the change (0.5 before)")
p.add_argument("--trees", type=int, default=None, help="cap LightGBM trees (default: TRAIN_DEFAULTS with early stopping)")
a = p.parse_args()

changed_cfg = SimConfig(changes=((a.change_month, "price_rise_month_share", a.rise_share),
                                 (a.change_month, "price_rise_unannounced_share", a.unannounced)))
t = Thresholds()
rows = []
t0 = time.perf_counter()
for seed in tqdm(range(a.seeds), desc="seeds"):
    for world, cfg in (("stable", SimConfig()), ("changed", changed_cfg)):
        nm = next_month(a.customers, a.months, seed, train_months=a.train_months, score_month=a.score_month, config=cfg)
        trained, split = train(nm.history, trials=0, **({"n_estimators": a.trees} if a.trees else {}))
        ref = Reference.fit(trained, nm.reference_rows, labelled=split.frames(nm.history.labelled())[2])
        rep = drift(ref, nm.new.frame, trained, thresholds=t)
        pil = dict(zip(rep.pillars["pillar"], zip(rep.pillars["psi"], rep.pillars["status"], strict=True), strict=True))
        perf = dict(zip(rep.performance["metric"], rep.performance["status"], strict=True))
        worst = max(rep.pillars["status"].to_list() + [rep.risk["status"]], key=["ok", "warn", "alarm"].index)
        others = [q for q in TRUST_PILLARS if q in pil and q != "transparency" and pil[q][1] != "ok"]
        rows.append({"seed": seed, "world": world, "rows": rep.rows, "worst_psi_status": worst,
                     "transparency_psi": round(pil["transparency"][0], 3), "transparency": pil["transparency"][1],
                     "flagged_pillars": ", ".join(f"{q}:{s}" for q, (_, s) in pil.items() if s != "ok") or "-",
                     "other_trust_flagged": ", ".join(others) or "-", "risk_psi": round(rep.risk["psi"], 3),
                     "churn_rate": perf.get("churn rate", "n/a"), "auc": perf.get("roc_auc", "n/a")})
seconds = time.perf_counter() - t0
df = pl.DataFrame(rows)
with pl.Config(tbl_hide_dataframe_shape=True, tbl_width_chars=250, fmt_str_lengths=60, tbl_rows=100, tbl_cols=-1):
    print(df)
st, ch = df.filter(pl.col("world") == "stable"), df.filter(pl.col("world") == "changed")
rate = lambda frame, expr: round(float(frame.select(expr.mean()).item()), 3)  # noqa: E731
print(json.dumps({
    "benchmark": "drift_alarms", "seeds": a.seeds, "customers": a.customers, "months": a.months, "train_months": a.train_months,
    "score_month": a.score_month, "change_month": a.change_month, "rise_share": a.rise_share, "unannounced": a.unannounced,
    "false_alarm_rate": rate(st, pl.col("worst_psi_status") == "alarm"),
    "false_warn_rate": rate(st, pl.col("worst_psi_status") != "ok"),
    "false_warn_rate_trust_pillars": rate(st, (pl.col("other_trust_flagged") != "-") | (pl.col("transparency") != "ok")),
    "perf_alarm_rate_stable": rate(st, (pl.col("churn_rate") == "alarm") | (pl.col("auc") == "alarm")),
    "detection_rate": rate(ch, pl.col("transparency") != "ok"),
    "transparency_alarm_rate": rate(ch, pl.col("transparency") == "alarm"),
    "wrong_pillar_rate": rate(ch, pl.col("other_trust_flagged") != "-"),
    "median_transparency_psi_stable": float(np.median(st["transparency_psi"].to_numpy())),
    "median_transparency_psi_changed": float(np.median(ch["transparency_psi"].to_numpy())),
    "seconds": round(seconds, 1)}))
