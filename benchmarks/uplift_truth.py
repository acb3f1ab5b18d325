"""A randomised retention campaign on the simulator: analysis, uplift model and targeting vs the truth.

    python benchmarks/uplift_truth.py                                   # 20,000 customers x 24 months, service call in month 16
    python benchmarks/uplift_truth.py --customers 6000 --months 20 --month 14 --offer discount

Half the customers active at the campaign month are offered (seeded assignment); the outcome is
churn in the 3 months after. Printed: the average effect with its 95% interval beside the true
one; with every customer scored by an uplift model fitted on the other half (2-fold cross-fitting),
the uplift model's Qini coefficient beside the oracle's (ranking by the true individual effect; both
read on the same observed outcomes), the per-customer Spearman of the uplift model with the true
effects (free of outcome noise); and the money of targeting persuadables by expected value net of
cost beside targeting the riskiest customers (same number of offers), valued with the true effects.
`--learner t|x|dr` picks the meta-learner, `--no-traits` leaves out the revealed per-customer traits.
Ends with one JSON line.
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
ap.add_argument("--offer", default="service_call")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--value-months", type=float, default=12.0, help="a kept customer is worth this many months of price")
ap.add_argument("--learner", default="x", choices=["t", "x", "dr"])
ap.add_argument("--no-traits", action="store_true", help="uplift model without the revealed per-customer traits")
args = ap.parse_args()

t0 = time.perf_counter()
c = Campaign(args.offer, month=args.month, share=0.5, seed=args.seed)
r = simulated_campaign(c, n_customers=args.customers, n_months=args.months, seed=args.seed, value_months=args.value_months,
                       learner=args.learner, traits=not args.no_traits)
seconds = time.perf_counter() - t0
a = r["analysis"]
print(f"campaign: {c.offer} in month {c.month}, {a['treated']} offered / {a['control']} control")
print(f"average effect on 3-month churn: {100 * a['ate']:+.2f} points [{100 * a['ci'][0]:+.2f}, {100 * a['ci'][1]:+.2f}]"
      f"  true {100 * r['true_ate']:+.2f}")
print(f"share of customers the offer would push out (true effect > 0): {r['harmful_share']:.1%}")
print(f"Qini coefficient ({r['held_out']} customers, cross-fitted): uplift model {r['qini_model']['coefficient']:.4f}  "
      f"oracle {r['qini_oracle']['coefficient']:.4f}; uplift vs true effects: Spearman {r['spearman_truth']:.3f}")
with pl.Config(tbl_hide_dataframe_shape=True, float_precision=1, fmt_str_lengths=60):
    print(r["money"])
money = dict(zip(r["money"]["targeting"], r["money"]["money"], strict=True))
print(json.dumps({"benchmark": "uplift_truth", "customers": args.customers, "months": args.months, "offer": c.offer,
                  "month": c.month, "seed": args.seed, "seconds": round(seconds, 1),
                  "ate_points": round(100 * a["ate"], 3), "ci_points": [round(100 * x, 3) for x in a["ci"]],
                  "true_ate_points": round(100 * r["true_ate"], 3), "truth_in_ci": bool(a["ci"][0] <= r["true_ate"] <= a["ci"][1]),
                  "harmful_share": round(r["harmful_share"], 4),
                  "learner": args.learner, "traits": not args.no_traits,
                  "qini_model": round(r["qini_model"]["coefficient"], 5), "qini_oracle": round(r["qini_oracle"]["coefficient"], 5),
                  "spearman_truth": round(r["spearman_truth"], 3),
                  "money": {k: round(v) for k, v in money.items()}}))
