"""The what-if explorer for JupyterLab: ipywidgets bound to the pure functions in `trustml.whatif`.

Pick a customer (riskiest first, ids pseudonymised), move the actionable levers the feature
registry offers (sliders within valid ranges, toggles for categories), and see risk, the pillar
chart and reason codes update; Reset puts the customer back as they are. Nothing is printed:
every result lives in widget state (HTML and Image widgets), so stored notebook outputs stay
comparable and no stray stdout appears under nbval.

Examples
--------
>>> from trustml.study import Study
>>> study = Study.load(n_customers=1500, n_months=15, seed=0)
>>> ex = Explorer(study.trained, study.latest)
>>> ex.set(promise_broken=0).risk_after <= 1
True
>>> ex.reset().settings
{}
"""

from __future__ import annotations

import io

import ipywidgets as W
import numpy as np
import polars as pl

from trustml.explanations import explain, pillar_explanation
from trustml.model import TrainedModel
from trustml.pillars import PILLARS
from trustml.privacy import pseudonymise
from trustml.whatif import WhatIf, levers, what_if

__all__ = ["Explorer"]


class Explorer:
    """Widgets for one model and a frame of customers (one row each, e.g. the latest snapshot)."""

    def __init__(self, trained: TrainedModel, frame: pl.DataFrame, *, top: int = 50, cohort_column: str | None = "plan",
                 id_column: str = "customer_id", draw: bool = True):
        self.trained, self.frame, self.id_column, self.draw = trained, frame, id_column, draw
        risk = trained.predict_risk(frame)
        order = np.argsort(-risk, kind="stable")[:top]
        ids = pseudonymise(frame[id_column].gather(order).to_list()) if id_column in frame.columns else [str(i) for i in order]
        self.customer = W.Dropdown(options=[(f"#{k + 1}  {c}  ({risk[i]:.0%})", int(i)) for k, (i, c) in enumerate(zip(order, ids, strict=True))],
                                   description="Customer", layout=W.Layout(width="420px"))
        self.levers = levers(trained.registry)
        self.controls = {lv.name: self._control(lv) for lv in self.levers}
        self.risk = W.HTML()
        self.cohort = W.HTML()
        self.reasons = W.HTML()
        self.chart = W.Image(format="png", layout=W.Layout(width="520px"))
        self.reset_button = W.Button(description="Reset", icon="undo", tooltip="Put the customer back as they are")
        self.cohort_column = cohort_column if cohort_column in frame.columns else None
        pe = pillar_explanation(explain(trained, frame), trained.registry)
        self._pillar_values, self._risk = pe.values, risk
        self._loading = False
        self.result: WhatIf | None = None
        self.customer.observe(lambda _: self.load(), names="value")
        for c in self.controls.values():
            c.observe(lambda _: self.update(), names="value")
        self.reset_button.on_click(lambda _: self.reset())
        self.widget = W.VBox([self.customer, self.risk, self.cohort,
                              W.HBox([self.chart, self.reasons], layout=W.Layout(align_items="flex-start")),
                              W.HTML("<b>Levers the company controls</b> (linked features follow by the same ratio)"),
                              *self.controls.values(), self.reset_button])
        self.load()

    @staticmethod
    def _control(lv):
        style = {"description_width": "380px"}
        label = lv.description.rstrip(".")
        if lv.categorical:
            cls = W.ToggleButtons if len(lv.options) <= 4 else W.Dropdown
            return cls(options=list(lv.options), description=label, style=style, tooltip=lv.primary)
        step = 1.0 if "__count" in lv.primary else round((lv.high - lv.low) / 100, 3) or 0.01
        return W.FloatSlider(min=lv.low, max=lv.high, step=step, description=label, style=style, continuous_update=False,
                             layout=W.Layout(width="760px"), readout_format=".1f" if step < 1 else ".0f")

    # -- state ---------------------------------------------------------------------------------
    @property
    def row(self) -> pl.DataFrame:
        return self.frame[int(self.customer.value)]

    @property
    def settings(self) -> dict:
        """The levers moved away from the customer's own values."""
        row, out = self.row, {}
        for lv in self.levers:
            now, was = self.controls[lv.name].value, row[lv.primary][0]
            if self.controls[lv.name].disabled:
                continue
            if (lv.categorical and now != was) or (not lv.categorical and was is not None and abs(now - was) > 1e-9):
                out[lv.name] = now
        return out

    def load(self) -> Explorer:
        """Show the selected customer as they are."""
        row = self.row
        self._loading = True
        for lv in self.levers:
            c, v = self.controls[lv.name], row[lv.primary][0]
            usable = v is not None and (not lv.categorical or v in lv.options)
            c.disabled = not usable
            if usable:
                c.value = v if lv.categorical else float(np.clip(v, lv.low, lv.high))
        self._loading = False
        return self.update()

    def reset(self) -> Explorer:
        return self.load()

    def set(self, **settings) -> WhatIf:
        """Move levers programmatically (as a user would), e.g. `set(promise_broken=0)`; returns the result."""
        self._loading = True
        for k, v in settings.items():
            if k not in self.controls:
                raise KeyError(f"no lever {k!r}; levers: {list(self.controls)}")
            self.controls[k].value = v
        self._loading = False
        self.update()
        return self.result

    def update(self) -> Explorer:
        if self._loading:
            return self
        r = what_if(self.trained, self.row, self.settings, id_column=self.id_column)
        self.result = r
        arrow = "" if not r.settings else f" &rarr; <b>{r.risk_after:.1%}</b> ({r.change_points:+.1f} points)"
        self.risk.value = f"<span class='trustml-risk'>{r.customer}: churn risk <b>{r.risk_before:.1%}</b>{arrow}</span>"
        self.cohort.value = self._cohort_text()
        rows = "".join(f"<li>[{x['pillar']}] {x['reason']}</li>" for x in r.reasons.iter_rows(named=True))
        self.reasons.value = f"<b>Why, after the changes</b><ul>{rows or '<li>nothing raises this risk above the average</li>'}</ul>"
        if self.draw:
            self.chart.value = self._png(r)
        return self

    def _cohort_text(self) -> str:
        i = int(self.customer.value)
        if self.cohort_column:
            value = self.frame[self.cohort_column][i]
            mask = (self.frame[self.cohort_column] == value).to_numpy()
            name = f"{self.cohort_column} = {value}"
        else:
            mask, name = np.ones(self.frame.height, dtype=bool), "all customers"
        gap = self._pillar_values[i] - self._pillar_values[mask].mean(axis=0)
        k = int(np.argmax(gap))
        p = self.trained.registry.pillars[k]
        return (f"Cohort ({name}, {int(mask.sum()):,} customers): mean risk {self._risk[mask].mean():.1%}. "
                f"Biggest gap: <b>{PILLARS[p].label}</b> {gap[k]:+.2f} log-odds above the cohort.")

    def _png(self, r: WhatIf) -> bytes:
        from matplotlib.figure import Figure
        fig = Figure(figsize=(6, 3.2), dpi=90)
        ax = fig.subplots()
        y = np.arange(r.pillars.height)
        ax.barh(y + 0.2, r.pillars["before"], height=0.4, color="#bbbbbb", label="as they are")
        after = r.pillars["after"].to_numpy()
        ax.barh(y - 0.2, after, height=0.4, color=np.where(after > 0, "#d62728", "#2ca02c"), label="after the changes")
        ax.set_yticks(y, r.pillars["label"].to_list())
        ax.invert_yaxis()
        ax.axvline(0, c="black", lw=0.6)
        ax.set_xlabel("contribution to churn risk (log-odds; right = raises risk)")
        ax.legend(loc="lower right", fontsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()

    # -- display -------------------------------------------------------------------------------
    def summary(self) -> str:
        r = self.result
        lines = [r.summary()]
        lines += [f"  [{x['pillar']}] {x['reason']}" for x in r.reasons.iter_rows(named=True)]
        return "\n".join(lines)

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = "trustml what-if explorer\n" + self.summary()
        return bundle
