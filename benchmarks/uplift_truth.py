"""A randomised retention campaign on the simulator: analysis, uplift model, calibration and targeting vs the truth.

    python benchmarks/uplift_truth.py                                   # 20,000 customers x 24 months, service call in month 16
    python benchmarks/uplift_truth.py --customers 8000 --offers service_call,goodwill_credit --seeds 0,1,2

Half the customers active at the campaign month are offered (seeded assignment); the outcome is
churn in the 3 months after. Printed per run: the average effect with its 95% interval beside the
true one; with every customer scored by an uplift model fitted on the other half (2-fold
cross-fitting), the uplift model's Qini coefficient beside the oracle's (ranking by the true
individual effect; both read on the same observed outcomes) and the per-customer Spearman of the
uplift model with the true effects (free of outcome noise); the calibration slopes (each half
calibrated on the other half's held-out DR pseudo-outcomes); the offer's expected cost (terms x the
abuse seen among the offered) and the plan's message; and the money, valued with the true effects
and true costs on the same customers: the calibrated persuadable plan, the raw uplift scores, the
riskiest customers (same number, and a fixed 20%), everyone, and the oracle.
`--learner scaled|t|x|dr|forest` picks the meta-learner, `--no-traits` leaves out the revealed per-customer
traits, `--confidence` the one-sided confidence a targeted customer's saving must cover the cost at.
Each run prints one JSON line; several runs then print a summary table and end with its JSON line.
"""

import argparse
import json
import time

import polars as pl

from trustml.campaigns import simulated_campaign
from trustml.simulator import Campaign

ap = argparse.ArgumentParser()
ap.add_argument("--customers", type=int, default=20_000)
ap.add_argument("--months", type=int, default=24)
ap.add_argument("--month", type=int, default=16, help="campaign month (0-based)")
ap.add_argument("--offers", "--offer", default="service_call", help="comma-separated offer kinds")
ap.add_argument("--seeds", "--seed", default="0", help="comma-separated seeds")
ap.add_argument("--value-months", type=float, default=12.0, help="a kept customer is worth this many months of price")
ap.add_argument("--learner", default="scaled", choices=["scaled", "t", "x", "dr", "forest"])
ap.add_argument("--confidence", type=float, default=0.8)
ap.add_argument("--no-traits", action="store_true", help="uplift model without the revealed per-customer traits")
args = ap.parse_args()

PLAN, RISK_SAME, RISK20, ORACLE = ("persuadables (calibrated, net of cost)", "riskiest (same number)", "riskiest 20%",
                                   "oracle (true effects)")
summary = []
for offer in args.offers.split(","):
    for seed in (int(s) for s in args.seeds.split(",")):
        t0 = time.perf_counter()
        c = Campaign(offer, month=args.month, share=0.5, seed=seed)
        r = simulated_campaign(c, n_customers=args.customers, n_months=args.months, seed=seed, value_months=args.value_months,
                               learner=args.learner, traits=not args.no_traits, confidence=args.confidence)
        seconds = time.perf_counter() - t0
        a, p, cal = r["analysis"], r["plan"], r["calibration"]
        print(f"\ncampaign: {c.offer} in month {c.month}, seed {seed}, {a['treated']} offered / {a['control']} control")
        print(f"average effect on 3-month churn: {100 * a['ate']:+.2f} points [{100 * a['ci'][0]:+.2f}, {100 * a['ci'][1]:+.2f}]"
              f"  true {100 * r['true_ate']:+.2f}")
        print(f"share of customers the offer would push out (true effect > 0): {r['harmful_share']:.1%}")
        print(f"Qini coefficient ({r['held_out']} customers, cross-fitted): uplift model {r['qini_model']['coefficient']:.4f}  "
              f"oracle {r['qini_oracle']['coefficient']:.4f}; uplift vs true effects: Spearman {r['spearman_truth']:.3f}")
        print(f"calibration slopes (per half): {', '.join(f'{s:.2f}' for s in cal['slopes'])}; offer cost: terms "
              f"{cal['cost_terms']:.2f}, expected {cal['expected_cost']:.2f} per offer (abuse included)")
        print(f"plan: {p['message']}")
        with pl.Config(tbl_hide_dataframe_shape=True, float_precision=1, fmt_str_lengths=60):
            print(r["money"])
        money = dict(zip(r["money"]["targeting"], r["money"]["money"], strict=True))
        row = {"benchmark": "uplift_truth", "customers": args.customers, "months": args.months, "offer": c.offer,
               "month": c.month, "seed": seed, "seconds": round(seconds, 1),
               "ate_points": round(100 * a["ate"], 3), "ci_points": [round(100 * x, 3) for x in a["ci"]],
               "true_ate_points": round(100 * r["true_ate"], 3), "truth_in_ci": bool(a["ci"][0] <= r["true_ate"] <= a["ci"][1]),
               "harmful_share": round(r["harmful_share"], 4), "learner": args.learner, "traits": not args.no_traits,
               "qini_model": round(r["qini_model"]["coefficient"], 5), "qini_oracle": round(r["qini_oracle"]["coefficient"], 5),
               "spearman_truth": round(r["spearman_truth"], 3), "calibration_slopes": [round(s, 3) for s in cal["slopes"]],
               "expected_cost": round(cal["expected_cost"], 2), "plan_offers": p["offers"],
               "plan_estimated_money": round(p.get("estimated_money", 0.0)), "money": {k: round(v) for k, v in money.items()}}
        print(json.dumps(row))
        summary.append({"offer": offer, "seed": seed, "qini_model": row["qini_model"], "qini_oracle": row["qini_oracle"],
                        "spearman": row["spearman_truth"], "plan_offers": p["offers"], "plan_money": money[PLAN],
                        "risk_same_number": money[RISK_SAME], "risk_20pct": money[RISK20], "oracle": money[ORACLE]})
if len(summary) > 1:
    with pl.Config(tbl_hide_dataframe_shape=True, float_precision=4, tbl_rows=50, tbl_cols=20, tbl_width_chars=200):
        print("\nsummary (money valued with the true effects and costs, same customers)")
        print(pl.DataFrame(summary).with_columns(pl.col("plan_money", "risk_same_number", "risk_20pct", "oracle").round(0)))
    print(json.dumps({"benchmark": "uplift_truth", "customers": args.customers, "months": args.months, "runs": summary}))
