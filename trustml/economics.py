"""Retention economics: what targeting the riskiest customers is worth, in money.

Assumptions are explicit parameters and are printed beside every figure.

Examples
--------
>>> import numpy as np
>>> econ = retention_economics(risk=np.array([0.5, 0.2, 0.05]), value=np.array([600.0, 600.0, 600.0]),
...                            offer_cost=20.0, save_rate=0.3)
>>> int(econ.best["customers_targeted"])
2
>>> retention_economics(np.array([0.5]), np.array([900.0]), value_basis="clv").value_basis.startswith("CLV at stake")
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

__all__ = ["Assumptions", "Economics", "retention_economics", "customer_value", "sensitivity", "VALUE_BASES"]

VALUE_BASES = {
    "flat": "value per period x a flat average lifetime (1 / churn rate), the same lifetime for everyone",
    "clv": "CLV at stake: each customer's value x margin over their own survival curve, discounted (trustml.survival.clv)",
}


@dataclass(frozen=True)
class Assumptions:
    offer_cost: float = 20.0            # cost of one retention offer (money)
    save_rate: float = 0.30             # share of targeted would-be churners the offer keeps
    acquisition_multiple: float = 5.0   # winning a new customer costs this many times one offer
    currency: str = "$"

    def lines(self) -> list[str]:
        c = self.currency
        return [f"offer cost per targeted customer: {c}{self.offer_cost:,.2f}",
                f"share of targeted churners an offer saves: {self.save_rate:.0%}",
                f"replacing a lost customer costs {self.acquisition_multiple:g}x an offer ({c}{self.acquisition_multiple * self.offer_cost:,.2f})"]


@dataclass
class Economics:
    curve: pl.DataFrame       # one row per targeting depth
    best: dict                # the most profitable depth
    plus_5pp: float           # value of +5 percentage points of retention on this population
    assumptions: Assumptions
    value_basis: str = VALUE_BASES["flat"]   # what `value` is: the flat average lifetime or CLV at stake

    def summary(self) -> str:
        c, b = self.assumptions.currency, self.best
        head = ([f"Best campaign: target the {b['customers_targeted']:,} riskiest customers (risk >= {b['risk_threshold']:.3f}),",
                 f"  expected profit {c}{b['expected_profit']:,.0f} on {c}{b['campaign_cost']:,.0f} spent (ROI {b['roi']:.0%})."]
                if b["customers_targeted"] else
                ["Best campaign: none. At these assumptions no depth of targeting pays for its offers",
                 "  (the offer costs more than the value it is expected to save, even for the riskiest customer)."])
        lines = [*head,
                 f"+5 percentage points of retention on these {self.curve.height - 1:,} customers is worth {c}{self.plus_5pp:,.0f}.",
                 "Assumptions:"] + [f"  - {x}" for x in self.assumptions.lines()]
        if self.value_basis != VALUE_BASES["flat"]:  # the flat basis is said by the caller's value note (`Study.value_note`)
            lines.insert(3, f"Value at stake per customer: {self.value_basis}.")
        return "\n".join(lines)

    def plot(self, ax=None):
        import matplotlib.pyplot as plt
        ax = ax or plt.subplots(figsize=(6, 3.8))[1]
        ax.plot(self.curve["share_targeted"], self.curve["expected_profit"])
        ax.axvline(self.best["share_targeted"], ls=":", c="grey")
        ax.axhline(0, c="black", lw=0.5)
        ax.set(title="Retention campaign profit by targeting depth", xlabel="share of customers targeted (riskiest first)",
               ylabel=f"expected profit ({self.assumptions.currency})")
        return ax


def customer_value(monthly_price, monthly_churn_rate: float) -> np.ndarray:
    """Monthly price x expected lifetime in months (1 / monthly churn rate)."""
    if not 0 < monthly_churn_rate < 1:
        raise ValueError(f"monthly churn rate must be in (0, 1), got {monthly_churn_rate}")
    return np.asarray(monthly_price, dtype=float) / monthly_churn_rate


def retention_economics(risk, value, assumptions: Assumptions | None = None, *, value_basis: str = "flat", **kw) -> Economics:
    """Profit curve over targeting depth, best threshold, ROI, and the worth of +5 points of retention.

    A targeted customer with churn risk r and value v is worth r * save_rate * (v + replacement
    cost) in expectation, for one offer's cost. value_basis: what `value` is, printed in the summary:
    'flat' (price x the flat average lifetime, 1 / churn rate), 'clv' (CLV at stake from each
    customer's survival curve, `trustml.survival.clv`), or your own description.
    """
    a = assumptions or Assumptions(**kw)
    basis = VALUE_BASES.get(value_basis, value_basis)
    risk, value = np.asarray(risk, dtype=float), np.asarray(value, dtype=float)
    if risk.shape != value.shape or risk.ndim != 1 or risk.size == 0:
        raise ValueError(f"risk and value must be 1-d and the same length, got {risk.shape} and {value.shape}")
    if np.any((risk < 0) | (risk > 1)) or not np.all(np.isfinite(value)):
        raise ValueError("risk must be probabilities in [0, 1] and value finite")
    order = np.argsort(-risk, kind="stable")
    replace = a.acquisition_multiple * a.offer_cost
    gain = risk[order] * a.save_rate * (value[order] + replace)
    k = np.arange(risk.size + 1)
    profit = np.concatenate([[0.0], np.cumsum(gain - a.offer_cost)])
    cost = k * a.offer_cost
    threshold = np.concatenate([[1.0], risk[order]])
    curve = pl.DataFrame({"customers_targeted": k, "share_targeted": k / risk.size, "risk_threshold": threshold,
                          "campaign_cost": cost, "expected_profit": profit,
                          "roi": np.divide(profit, cost, out=np.zeros_like(profit), where=cost > 0)})
    best = curve.row(int(np.argmax(profit)), named=True)
    plus_5pp = 0.05 * risk.size * float(np.mean(value) + replace)
    return Economics(curve, best, plus_5pp, a, basis)


def sensitivity(risk, value, *, save_rates=(0.1, 0.2, 0.3, 0.5), offer_costs=(10.0, 20.0, 50.0), **kw) -> pl.DataFrame:
    """Best campaign profit, depth and ROI over a grid of save rates and offer costs: how much the answer leans on them."""
    rows = []
    for s in save_rates:
        for c in offer_costs:
            e = retention_economics(risk, value, Assumptions(offer_cost=c, save_rate=s, **kw))
            rows.append({"save_rate": s, "offer_cost": c, "customers_targeted": e.best["customers_targeted"],
                         "expected_profit": round(e.best["expected_profit"], 2), "roi": round(e.best["roi"], 3)})
    return pl.DataFrame(rows)
