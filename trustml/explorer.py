"""The what-if explorer for JupyterLab: ipywidgets controls bound to `trustml.whatif`, a chart drawn in the browser.

Pick a customer (the top-N riskiest, or find one by pseudonymised id or your own id: never a
dropdown of every customer), move the actionable levers the feature registry offers (sliders
within valid ranges, toggles for categories), and see risk, the pillar chart and the reasons
update; Reset puts the customer back as they are. The kernel only computes (`what_if`) and sends
numbers; the chart is SVG drawn by `explorer.js` (an anywidget) in the browser. Slider moves are
sent while dragging; ipywidgets keeps at most one change in flight and sends the latest value when
the kernel is free, so a fast drag never queues stale updates. Every number says what kind it is:

* the model's risk change is a **model association** (what the churn model predicts), not a causal effect;
* with `effects=` (`trustml.causal.lever_effects`) and `events=` (the event log), each lever's policy
  gets its **causal estimate (double ML)** for this customer with a 95% interval
  (`trustml.causal.causal_for_rows`), beside the model's what-if for the same policy; a lever
  without one says so;
* with `survival=` (`trustml.survival.fit_survival`), the customer's survival curve S(k), k = 1..H,
  before and after the current settings, and the expected months of the next H: the hazard model's
  answer, also a model association.

At a million customers the explorer stays responsive: construction scores the frame once (or takes
`risk=` from a scoring run) and explains a seeded sample for the cohort means; the first search
builds an index of the pseudonyms (one hash per customer, once), after which a search is a binary
search (see benchmarks/explorer_scale.py).

For static HTML (nbconvert, `trustml report`) the display also carries a static rendering (inline
SVG, lever settings, reasons); `freeze_explorers(nb)` swaps each live explorer in an executed
notebook for that rendering of its final state, so a report shows the explorer with no network.

Examples
--------
>>> from trustml.study import Study
>>> study = Study.load(n_customers=1500, n_months=15, seed=0)
>>> ex = Explorer(study.trained, study.latest)
>>> ex.set(promise_broken=0).risk_after <= 1
True
>>> ex.reset().settings
{}
>>> "<svg" in ex.static_html() and NOTE in ex.static_html()
True
"""

from __future__ import annotations

import copy
import html
import math
import re
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import anywidget
import ipywidgets as W
import numpy as np
import polars as pl
import traitlets as T

from trustml.explanations import explain, pillar_explanation
from trustml.model import TrainedModel
from trustml.pillars import PILLARS
from trustml.privacy import pseudonymise
from trustml.whatif import ASSOCIATION, Lever, WhatIf, apply_levers, change_points, levers, what_if

__all__ = ["Explorer", "ExplorerChart", "freeze_explorers", "static_html", "NOTE", "MODEL_KIND", "CAUSAL_KIND", "SURVIVAL_KIND",
           "LAB_LOW_LATENCY"]

NOTE = ASSOCIATION  # the label of every model what-if (trustml.whatif)
MODEL_KIND = "model association"             # a number the churn model gives for other feature values
CAUSAL_KIND = "causal estimate (double ML)"  # a number from trustml.causal (double machine learning on the observed tables)
SURVIVAL_KIND = "hazard model: a model association"   # survival curves and expected months after a what-if
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
GREY, RED, GREEN = "#bbbbbb", "#d62728", "#2ca02c"
_HEX = re.compile(r"[0-9a-f]{1,10}")


class ExplorerChart(anywidget.AnyWidget):
    """Risk, pillar contributions and reasons before/after, as data; `explorer.js` draws them as SVG in the browser."""

    _esm = Path(__file__).with_name("explorer.js")
    customer = T.Unicode("").tag(sync=True)       # pseudonymised id
    picked = T.Unicode("").tag(sync=True)         # how the customer was picked (static rendering)
    risk_before = T.Float(0.0).tag(sync=True)
    risk_after = T.Float(0.0).tag(sync=True)
    moved = T.List().tag(sync=True)               # [{label, own, value}] levers moved away from the customer's values
    pillars = T.List().tag(sync=True)             # [{label, before, after}] log-odds contributions
    reasons = T.List().tag(sync=True)             # [{pillar, reason}] after the changes
    cohort = T.Unicode("").tag(sync=True)
    levers = T.List().tag(sync=True)              # [{label, own, value, disabled}] every control (static rendering)
    causal = T.List().tag(sync=True)              # [{label, policy, model, causal, low, high, moved}] per lever (effects given)
    survival = T.Dict().tag(sync=True)            # {horizon, time_label, before, after, months_before, months_after} (survival given)
    version = T.Int(0).tag(sync=True)             # +1 per update; the browser sets data-version after drawing
    compute_ms = T.Float(0.0).tag(sync=True)      # kernel time of the last update (what_if + packing)
    sent_at = T.Float(0.0).tag(sync=True)         # kernel wall clock (ms since the epoch) when it was sent: latency split


NO_LEVERS = ("Nothing in this data is marked actionable, so there is nothing to change here: the chart shows why this "
             "customer's risk is what it is. Mark the columns or event types the company controls under [actionable] in the "
             "mapping (e.g. Contract = [\"Month-to-month\", \"One year\", \"Two year\"]) to get what-if levers.")


class Explorer:
    """Widgets for one model and a frame of customers (one row each, e.g. the latest snapshot).

    `top`: how many of the riskiest customers the picker lists; any other customer is found by
    id (`find`). `sample`: rows explained for the cohort means (seeded; all rows when fewer).
    `effects` (`trustml.causal.lever_effects`) with `events` (the event log the effects were
    estimated from; a LazyFrame scan of a large log is read one customer at a time): each lever's causal
    estimate for the customer shown, beside the model's answer.
    `survival` (`trustml.survival.fit_survival` on the same features): the survival curve before and
    after the what-if. `risk`: `trained.predict_risk(frame)` if already computed (e.g. by a scoring
    run), so a large frame is not scored twice; checked on the customers listed.
    `draw` is accepted for compatibility and has no effect: the kernel never draws, the browser does.
    """

    def __init__(self, trained: TrainedModel, frame: pl.DataFrame, *, top: int = 50, cohort_column: str | None = "plan",
                 id_column: str = "customer_id", sample: int = 20_000, seed: int = 0, draw: bool = True,
                 effects: dict | None = None, events: pl.DataFrame | pl.LazyFrame | None = None, survival=None, risk=None):
        self.trained, self.frame, self.id_column, self.top = trained, frame, id_column, top
        if effects and id_column not in frame.columns:
            raise ValueError(f"Explorer: effects= needs the customers' ids ({id_column!r}) to find their events")
        if effects and events is None:
            raise ValueError("Explorer: effects= needs events= (the event log the effects were estimated from): a customer's "
                             "causal effect depends on their own events")
        if survival is not None:
            missing = [n for n in [*survival.features, *([survival.tenure] if survival.tenure else [])] if n not in frame.columns]
            if missing:
                raise ValueError(f"Explorer: the survival model reads {len(missing)} feature(s) the frame lacks: {missing[:8]}")
        self.effects, self.survival = dict(effects or {}), survival
        self._risk = self._risks(risk)
        self._order = np.argsort(-self._risk, kind="stable")
        self._rank = np.empty(frame.height, dtype=np.int64)
        self._rank[self._order] = np.arange(frame.height)
        if risk is not None:
            self._check_risk(self._order[:top])
        self._index: tuple[np.ndarray, np.ndarray] | None = None   # pseudonym index, built on the first search
        self.customer = W.Dropdown(options=self._options(self._order[:top]), description="Customer", layout=W.Layout(width="420px"))
        self.search = W.Text(placeholder="find: cust-… pseudonym (or its start) or your own id", description="Find",
                             continuous_update=False, layout=W.Layout(width="420px"))
        self.found = W.HTML(f"the {min(top, frame.height):,} riskiest of {frame.height:,} customers")
        self.levers = levers(trained.registry)
        self.controls = {lv.name: self._control(lv) for lv in self.levers}
        self._loaded: dict = {}
        self.chart = ExplorerChart()
        self.reset_button = W.Button(description="Reset", icon="undo", tooltip="Put the customer back as they are")
        self.cohort_column = cohort_column if cohort_column in frame.columns else None
        rows = np.arange(frame.height) if frame.height <= sample else np.sort(np.random.default_rng(seed).choice(frame.height, sample, replace=False))
        self._sample = rows
        self._sample_pillars = pillar_explanation(explain(trained, frame[rows]), trained.registry).values if len(rows) else np.zeros((0, 0))
        self._events = self._by_customer(events) if self.effects else None
        self._causal_lever = self._causal_levers() if self.effects else {}
        self._loading = False
        self._cohort_for: int | None = None
        self._causal_for: int | None = None
        self._causal_rows: list[dict] = []
        self._causal_frame: pl.DataFrame | None = None
        self._survival_for: tuple[int, np.ndarray] | None = None   # (row, S before) of the customer shown
        self.result: WhatIf | None = None
        self.customer.observe(lambda _: self.load(), names="value")
        self.search.observe(lambda ch: self.find(ch["new"]), names="value")
        for c in self.controls.values():
            c.observe(self._on_control, names="value")
        self.reset_button.on_click(lambda _: self.reset())
        head = (f"<b>Levers the company controls</b> (linked features follow by the same ratio; effects are a {NOTE})"
                if self.levers else f"<b>{NO_LEVERS}</b>")
        self.widget = W.VBox([W.HBox([self.customer, self.search]), self.found, self.chart, W.HTML(head),
                              *self.controls.values(), self.reset_button])
        self.load()

    def _risks(self, risk) -> np.ndarray:
        if risk is None:
            return self.trained.predict_risk(self.frame)
        r = np.asarray(risk, dtype=float).ravel()
        if r.shape != (self.frame.height,) or not np.isfinite(r).all():
            raise ValueError(f"Explorer: risk= must be one finite churn risk per row of the frame ({self.frame.height:,}), "
                             f"got {r.shape[0]:,} values" + ("" if np.isfinite(r).all() else " with NaN or infinite ones"))
        return r

    def _check_risk(self, idx: np.ndarray) -> None:
        """`risk=` must be this model's risk for these rows: recomputed for the listed ones (cheap) and compared."""
        own = self.trained.predict_risk(self.frame[idx])
        if not np.allclose(own, self._risk[idx], rtol=1e-6, atol=1e-9):
            raise ValueError("Explorer: risk= is not trained.predict_risk(frame) for this model and frame (the riskiest rows "
                             "differ): pass the risks of the same model and rows, or leave risk= out")

    # -- controls ------------------------------------------------------------------------------
    @staticmethod
    def _control(lv: Lever):
        style = {"description_width": "380px"}
        label = lv.description.rstrip(".")
        if lv.categorical:
            cls = W.ToggleButtons if len(lv.options) <= 4 else W.Dropdown
            return cls(options=list(lv.options), description=label, style=style, tooltip=lv.primary)
        values = tuple(getattr(lv, "values", ()) or ())
        if values:
            return W.SelectionSlider(options=[(f"{v:g}", float(v)) for v in values], description=label, style=style,
                                     continuous_update=True, layout=W.Layout(width="760px"))
        step = getattr(lv, "effective_step", None) or (1.0 if "__count" in lv.primary else _nice_step((lv.high - lv.low) / 100))
        return W.FloatSlider(min=lv.low, max=lv.high, step=step, description=label, style=style, continuous_update=True,
                             layout=W.Layout(width="760px"), readout_format=f".{max(0, -int(np.floor(np.log10(step) + 1e-9)))}f")

    def _options(self, idx) -> list[tuple[str, int]]:
        idx = [int(i) for i in idx]
        ids = (pseudonymise(self.frame[self.id_column].gather(idx).to_list()) if self.id_column in self.frame.columns
               else [f"row {i}" for i in idx])
        return [(f"#{self._rank[i] + 1:,}  {c}  ({self._risk[i]:.0%})", i) for i, c in zip(idx, ids, strict=True)]

    # -- search ----------------------------------------------------------------------------------
    def _pseudonym_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted keys, row of each): a pseudonym's 10 hex digits as one integer, sorted. Built once, on the first search."""
        if self._index is None:
            ids = (self.frame[self.id_column].to_list() if self.id_column in self.frame.columns
                   else [f"row {i}" for i in range(self.frame.height)])
            key = pl.Series(pseudonymise(ids)).str.slice(5).str.to_integer(base=16).to_numpy()
            order = np.argsort(key, kind="stable")
            self._index = (key[order], order)
        return self._index

    def _matches(self, q: str) -> np.ndarray:
        """Rows whose pseudonym starts with `q` (any case) or whose own id is `q`: binary searches on the index."""
        keys, rows = self._pseudonym_index()
        ql = q.lower()
        spans = []
        if "cust-".startswith(ql):                     # 'c', 'cust', 'cust-': every pseudonym starts so
            spans.append((0, len(keys)))
        elif ql.startswith("cust-") and _HEX.fullmatch(ql[5:]):
            shift = 4 * (10 - len(ql) + 5)
            lo = int(ql[5:], 16) << shift
            spans.append((np.searchsorted(keys, lo, "left"), np.searchsorted(keys, lo + (1 << shift), "left")))
        own = int(pseudonymise([q])[0][5:], 16)
        spans.append((np.searchsorted(keys, own, "left"), np.searchsorted(keys, own, "right")))
        return np.unique(np.concatenate([rows[a:b] for a, b in spans]))

    def find(self, query: str) -> Explorer:
        """List the customers whose pseudonym starts with `query` (or whose own id is `query`), riskiest first.

        At most `top` are listed and the first is shown; an empty query lists the riskiest again. The first
        search builds an index of every customer's pseudonym (one hash each); later ones are binary searches.
        """
        q = (query or "").strip()
        if not q:
            idx, text = self._order[: self.top], f"the {min(self.top, self.frame.height):,} riskiest of {self.frame.height:,} customers"
        else:
            match = self._matches(q)
            ranks = self._rank[match]
            if len(ranks) > self.top:
                ranks = np.partition(ranks, self.top)[: self.top]
            idx = self._order[np.sort(ranks)]
            text = (f"no customer matches {html.escape(q)!r}" if not len(match)
                    else f"{len(match):,} customer{'s' if len(match) > 1 else ''} match {html.escape(q)!r}"
                         + (f" (the {self.top} riskiest listed)" if len(match) > self.top else ""))
        self.found.value = text
        if len(idx):
            current = self.customer.value
            self.customer.options = self._options(idx)   # selects the first; loads it through the observer
            if self.customer.value == current:
                self.load()
        return self

    # -- state ---------------------------------------------------------------------------------
    @property
    def row(self) -> pl.DataFrame:
        return self.frame[int(self.customer.value)]

    def _on_control(self, change: dict) -> None:
        """A lever moved: update, unless the browser only sent back its own float rounding of the value (10.000000000000002)."""
        old, new = change["old"], change["new"]
        if isinstance(old, float) and isinstance(new, float) and _float_noise(old, new):
            return
        self.update()

    @property
    def settings(self) -> dict:
        """The levers moved away from the customer's own values."""
        out = {}
        for lv in self.levers:
            c = self.controls[lv.name]
            if c.disabled or lv.name not in self._loaded:
                continue
            now, was = c.value, self._loaded[lv.name]
            if lv.categorical:
                if now != was:
                    out[lv.name] = now
            elif not _float_noise(float(was), float(now)):
                out[lv.name] = _on_lattice(lv, float(now))
        return out

    def load(self) -> Explorer:
        """Show the selected customer as they are."""
        row = self.row
        self._loading = True
        self._loaded = {}
        try:
            for lv in self.levers:
                c, v = self.controls[lv.name], row[lv.primary][0]
                usable = v is not None and (not lv.categorical or v in lv.options) and (lv.categorical or not np.isnan(v))
                c.disabled = not usable
                if not usable:
                    continue
                if isinstance(c, W.SelectionSlider):
                    vals = [o[1] for o in c.options]
                    v = vals[int(np.argmin([abs(x - v) for x in vals]))]
                elif not lv.categorical:   # on the slider's lattice, else the browser snaps it and sends it back as a move
                    v = float(min(c.min + round((np.clip(v, lv.low, lv.high) - c.min) / c.step) * c.step, c.max))
                c.value = v
                self._loaded[lv.name] = c.value   # what "not moved" means for this control
        finally:
            self._loading = False
        return self.update()

    def reset(self) -> Explorer:
        return self.load()

    def set(self, **settings) -> WhatIf:
        """Move levers programmatically (as a user would), e.g. `set(promise_broken=0)`; returns the result.

        A value the lever does not allow is a ValueError (a slider would silently clamp it).
        """
        by_name = {lv.name: lv for lv in self.levers}
        for k, v in settings.items():
            if k not in self.controls:
                raise KeyError(f"no lever {k!r}; levers: {list(self.controls)}")
            lv = by_name[k]
            ok = lv.allows(v) if hasattr(lv, "allows") else (str(v) in lv.options if lv.categorical else lv.low <= float(v) <= lv.high)
            if not ok:
                raise ValueError(f"lever {k!r}: {v!r} is not allowed" + (f"; allowed: {lv.allowed_text()}" if hasattr(lv, "allowed_text") else ""))
        self._loading = True
        try:
            for k, v in settings.items():
                self.controls[k].value = v if by_name[k].categorical else float(v)
        finally:
            self._loading = False
        self.update()
        return self.result

    def update(self) -> Explorer:
        """Re-run the what-if for the current controls and send the chart its new data (one message)."""
        if self._loading:
            return self
        t0 = time.perf_counter()
        row, settings = self.row, self.settings
        r = what_if(self.trained, row, settings, id_column=self.id_column)
        if self.effects:
            if self._causal_for != self.customer.value:   # once per customer: it does not depend on the levers
                self._causal_customer(row)
            r.causal = self._causal_frame
        self.result = r
        label = {lv.name: lv.description.rstrip(".") for lv in self.levers}
        data = {
            "customer": r.customer,
            "picked": self.customer.label or "",
            "risk_before": r.risk_before, "risk_after": r.risk_after,
            "moved": [{"label": label[k], "own": _fmt(self._loaded.get(k)), "value": _fmt(v)} for k, v in r.settings.items()],
            "pillars": [{"label": x["label"], "before": float(x["before"]), "after": float(x["after"])} for x in r.pillars.iter_rows(named=True)],
            "reasons": [{"pillar": x["pillar"], "reason": x["reason"]} for x in r.reasons.iter_rows(named=True)],
            "cohort": self._cohort_text(r) if self._cohort_for != self.customer.value else self.chart.cohort,
            "levers": [{"label": label[lv.name], "own": _fmt(self._loaded.get(lv.name)), "value": _fmt(self.controls[lv.name].value),
                        "disabled": bool(self.controls[lv.name].disabled)} for lv in self.levers],
            "causal": [{**{k: v for k, v in x.items() if k != "_lever"}, "moved": x["_lever"] in settings} for x in self._causal_rows],
            "survival": self._survival_data(row, settings) if self.survival is not None else {},
        }
        with self.chart.hold_sync():   # one comm message per update
            for k, v in data.items():
                setattr(self.chart, k, v)
            self.chart.compute_ms = 1000 * (time.perf_counter() - t0)
            self.chart.sent_at = 1000 * time.time()
            self.chart.version += 1
        return self

    # -- causal estimates beside the model's answer ------------------------------------------------
    def _by_customer(self, events: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame | pl.LazyFrame:
        """The event log sorted by customer (once, unless it already is): a customer's events are then a slice. A
        LazyFrame (a scan of a log too large to read, e.g. `Study.explorer` on a report's artifacts) is filtered per
        customer instead: parquet sorted by customer skips every row group but the customer's."""
        if self.id_column not in events.collect_schema().names():
            raise ValueError(f"Explorer: events= has no {self.id_column!r} column")
        if isinstance(events, pl.LazyFrame):
            return events
        ids = events[self.id_column]
        return events if ids.is_sorted() else events.sort(self.id_column, maintain_order=True)

    def _customer_events(self, row: pl.DataFrame) -> pl.DataFrame:
        if isinstance(self._events, pl.LazyFrame):
            return self._events.filter(pl.col(self.id_column) == row[self.id_column][0]).collect()
        ids = self._events[self.id_column]
        cid = row[self.id_column].cast(ids.dtype)[0]
        lo, hi = ids.search_sorted(cid, side="left"), ids.search_sorted(cid, side="right")
        return self._events.slice(lo, hi - lo)

    def _causal_levers(self) -> dict[str, str]:
        """Explorer lever -> the causal lever (policy) that moves it, e.g. 'promise_broken' -> 'promises'."""
        from trustml.causal import MODEL_SETTINGS
        names = {lv.name for lv in self.levers}
        out = {}
        for p in self.effects:
            try:
                moved = MODEL_SETTINGS[p](self.frame.head(1)) if p in MODEL_SETTINGS else {}
            except (KeyError, pl.exceptions.PolarsError):   # the policy's features are not in this data
                moved = {}
            out.update({k: p for k in moved if k in names})
        return out

    def _causal_customer(self, row: pl.DataFrame) -> None:
        """Per lever for this customer: the causal estimate of its policy (95% interval) and the model's what-if
        for the same policy (its feature change, `whatif.SIMULATOR_LEVERS`), both in points of churn risk."""
        from trustml.causal import CAUSAL_LEVERS, causal_for_rows
        from trustml.whatif import SIMULATOR_LEVERS
        c = causal_for_rows(self.effects, row, self._customer_events(row), id_column=self.id_column)
        self._causal_frame = c.drop("customer", "snapshot_date")
        est = {x["lever"]: x for x in c.iter_rows(named=True)}
        frames, which = [row], []
        for p in self.effects:
            try:
                s = {k: v for k, v in SIMULATOR_LEVERS[p](row).items() if self._causal_lever.get(k) == p} if p in SIMULATOR_LEVERS else {}
                if s:
                    frames.append(apply_levers(row, s, self.trained.registry))
                    which.append(p)
            except (ValueError, KeyError, TypeError, pl.exceptions.PolarsError):   # the policy is outside what the model's levers allow
                continue
        risk = self.trained.predict_risk(pl.concat(frames, how="vertical_relaxed"))
        model = {p: change_points(risk[i + 1], risk[0]) for i, p in enumerate(which)}
        by_policy = {p: k for k, p in self._causal_lever.items()}
        label = {lv.name: lv.description.rstrip(".") for lv in self.levers}
        rows = []
        for lv in self.levers:
            p = self._causal_lever.get(lv.name)
            rows.append(self._causal_row(label[lv.name], p, est.get(p), model.get(p), CAUSAL_LEVERS, lv.name))
        rows += [self._causal_row(PILLARS[p].label, p, est.get(p), model.get(p), CAUSAL_LEVERS, None)
                 for p in self.effects if p not in by_policy]
        self._causal_rows = sorted(rows, key=lambda x: x["causal"] is None)   # levers with a causal estimate first
        self._causal_for = self.customer.value

    @staticmethod
    def _causal_row(label: str, p: str | None, est: dict | None, model: float | None, causal_levers: dict, lever: str | None) -> dict:
        if p is None or est is None:
            return {"label": label, "policy": "", "model": None, "causal": None, "low": None, "high": None, "_lever": lever}
        return {"label": label, "policy": causal_levers[p].description, "model": model, "causal": _z(est["causal_points"]),
                "low": _z(est["ci_low_points"]), "high": _z(est["ci_high_points"]), "_lever": lever}

    # -- survival curve before and after ------------------------------------------------------------
    def _survival_data(self, row: pl.DataFrame, settings: dict) -> dict:
        """S(k), k = 1..H, and the expected months of the next H (``sum_k (S(k-1) + S(k)) / 2``, as
        `trustml.survival.lifetime_table`), before (once per customer) and after the current settings."""
        i = int(self.customer.value)
        if self._survival_for is None or self._survival_for[0] != i:
            self._survival_for = (i, self.survival.survival(row)[0])
        before = self._survival_for[1]
        after = self.survival.survival(apply_levers(row, settings, self.trained.registry))[0] if settings else before
        months = [float(((np.r_[1.0, S[:-1]] + S) / 2).sum()) for S in (before, after)]
        flat = self.survival.tenure is not None
        return {"horizon": int(self.survival.horizon), "before": [float(x) for x in before], "after": [float(x) for x in after],
                "months_before": months[0], "months_after": months[1],
                "time_label": "months from now (from the current tenure)" if flat else "months ahead"}

    def _cohort_text(self, r: WhatIf) -> str:
        """Once per customer (it does not depend on the levers)."""
        i = self._cohort_for = int(self.customer.value)
        if self.cohort_column:
            value = self.frame[self.cohort_column][i]
            mask = (self.frame[self.cohort_column] == value).to_numpy()
            name = f"{self.cohort_column} = {value}"
        else:
            mask, name = np.ones(self.frame.height, dtype=bool), "all customers"
        in_sample = mask[self._sample]
        ref = self._sample_pillars[in_sample] if in_sample.any() else self._sample_pillars
        gap = r.pillars["before"].to_numpy() - ref.mean(axis=0)
        k = int(np.argmax(gap))
        p = self.trained.registry.pillars[k]
        sampled = "" if len(self._sample) == self.frame.height else f", cohort mean from a sample of {int(in_sample.sum()):,}"
        return (f"Cohort ({name}, {int(mask.sum()):,} customers): mean risk {self._risk[mask].mean():.1%}. "
                f"Biggest gap: {PILLARS[p].label} {gap[k]:+.2f} log-odds above the cohort{sampled}.")

    # -- display -------------------------------------------------------------------------------
    def summary(self) -> str:
        r = self.result
        lines = [r.summary()] + ([] if self.levers else [NO_LEVERS])
        if self.effects:
            none = [x["label"] for x in self.chart.causal if x["causal"] is None]
            lines += [f"  no causal estimate ({MODEL_KIND} only) for: " + "; ".join(none)] if none else []
        s = self.chart.survival
        if s:
            lines.append(f"  expected months of the next {s['horizon']} ({SURVIVAL_KIND}): {s['months_before']:.1f}"
                         + (f" -> {s['months_after']:.1f}" if r.settings else "")
                         + f"; still a customer after {s['horizon']} months: {s['before'][-1]:.1%}"
                         + (f" -> {s['after'][-1]:.1%}" if r.settings else ""))
        lines += [f"  [{x['pillar']}] {x['reason']}" for x in r.reasons.iter_rows(named=True)]
        return "\n".join(lines)

    def static_html(self) -> str:
        """The explorer as it is now, as self-contained HTML (inline SVG, lever settings, reasons): no script, no network."""
        return static_html(self.chart.get_state())

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/html"] = self.static_html()
        bundle["text/plain"] = "trustml what-if explorer\n" + self.summary()
        return bundle, {"trustml": {"explorer_chart": self.chart.model_id}}


def _z(x) -> float:
    """A float with no negative zero (Python prints '-0.00' where JavaScript prints '+0.00')."""
    return float(x) + 0.0


def _float_noise(a: float, b: float) -> bool:
    """Whether two slider values differ only by float rounding (the browser's step arithmetic), not by a move."""
    return abs(b - a) <= 1e-6 * max(1.0, abs(a))


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    return f"{float(v):,.3g}"


def _nice_step(x: float) -> float:
    """The largest 1-2-5 step at most x (slider steps for continuous levers: 100 to 250 of them over the range)."""
    if not x > 0:
        return 0.01
    e = 10.0 ** np.floor(np.log10(x))
    return float(round(max(m * e for m in (1, 2, 5) if m * e <= x * (1 + 1e-12)), 12))


def _on_lattice(lv: Lever, v: float) -> float:
    """A slider value snapped to the lever's allowed values (float noise from the browser, e.g. 0.1 + 0.2)."""
    values = tuple(getattr(lv, "values", ()) or ())
    if values:
        return float(min(values, key=lambda x: abs(x - v)))
    s = getattr(lv, "effective_step", None)
    if s:
        v = lv.low + round((v - lv.low) / s) * s
    return float(np.round(v, 9))


# --- JupyterLab: the kernel websocket without Nagle's algorithm ----------------------------------

LAB_LOW_LATENCY = "--ServerApp.kernel_websocket_connection_class=trustml.explorer.NoDelayKernelConnection"
"""Command-line option for `jupyter lab` / `jupyter server`: kernel messages reach the browser at once.

Jupyter Server writes kernel messages to the browser's websocket with Nagle's algorithm on, so a
second small message (the chart's update after ipywidgets' echo) waits for the browser's delayed
ACK, about 40 ms on Linux. `NoDelayKernelConnection` is Jupyter Server's own connection class with
TCP_NODELAY set on the websocket; `trustml lab` starts JupyterLab with this option.
"""


def __getattr__(name: str):
    # built on first use, so `import trustml` does not import Jupyter Server
    if name == "NoDelayKernelConnection":
        from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

        class NoDelayKernelConnection(ZMQChannelsWebsocketConnection):
            """Jupyter Server's kernel websocket connection with TCP_NODELAY: no ~40 ms Nagle/delayed-ACK stall per update."""

            def connect(self):
                self.websocket_handler.set_nodelay(True)
                return super().connect()

        NoDelayKernelConnection.__module__ = __name__
        NoDelayKernelConnection.__qualname__ = name
        globals()[name] = NoDelayKernelConnection
        return NoDelayKernelConnection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- static rendering (reports): the same markup explorer.js draws, from the chart's state --------

def _e(x) -> str:
    return html.escape(str(x), quote=True).replace("&#x27;", "&#39;")   # as explorer.js escapes


def _fixed(x, n: int) -> str:
    """JavaScript's ``x.toFixed(n)``, which explorer.js draws with: the exact binary value rounded half away from zero
    (Python's format rounds half to even), so the static rendering is the browser's to the byte.

    Example
    -------
    >>> _fixed(9.25, 1), f"{9.25:.1f}", _fixed(-0.0001, 2), _fixed(2.675, 2)
    ('9.3', '9.2', '-0.00', '2.67')
    """
    return str(Decimal(_z(x)).quantize(Decimal(1).scaleb(-n), rounding=ROUND_HALF_UP))


def _sg(x, n: int) -> str:
    """Signed, n decimals, as explorer.js's sg (no negative zero)."""
    return ("" if _z(x) < 0 else "+") + _fixed(x, n)


def _pct(x) -> str:
    """explorer.js's pct: ``(100 * x).toFixed(1) + "%"``."""
    return _fixed(100 * x, 1) + "%"


def _num(x) -> str:
    """explorer.js's num: ``(Math.round(x * 10) / 10).toFixed(1)``."""
    return _fixed(math.floor(x * 10 + 0.5) / 10, 1)


def _svg(d: dict) -> str:
    width, lx, x0, x1, row, bar, top = 560, 150, 158, 548, 26, 9, 22
    p = d.get("pillars") or []
    risk_y, pil_y = top, top + 2 * bar + 24
    height = pil_y + len(p) * row + 30
    after = RED if d["risk_after"] > d["risk_before"] + 1e-12 else GREEN

    def rx(v):
        return x0 + (x1 - x0) * max(0.0, min(1.0, v))
    m = 1.1 * max([0.25] + [abs(r["before"]) for r in p] + [abs(r["after"]) for r in p])
    xz, half = (x0 + x1) / 2, (x1 - x0) / 2

    def x(v):
        return xz + v / m * half

    def rect(v, y, fill, cls):
        return (f'<rect class="{cls}" x="{_fixed(min(x(0), x(v)), 1)}" y="{_fixed(y, 1)}" width="{_fixed(abs(x(v) - x(0)), 1)}" height="{bar}" fill="{fill}"/>')
    out = [f'<svg class="trustml-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'font-family="sans-serif" font-size="11"><title>{_e(NOTE)}</title>',
           f'<rect x="{x0}" y="4" width="10" height="8" fill="{GREY}"/><text x="{x0 + 14}" y="12">as they are</text>',
           f'<rect x="{x0 + 100}" y="4" width="10" height="8" fill="{after}"/><text x="{x0 + 114}" y="12">after the changes (what the model predicts)</text>',
           f'<text x="{lx}" y="{risk_y + bar + 4}" text-anchor="end" font-weight="bold">Churn risk</text>',
           f'<rect class="trustml-risk-before" x="{x0}" y="{risk_y}" width="{_fixed(rx(d["risk_before"]) - x0, 1)}" height="{bar}" fill="{GREY}"/>',
           f'<rect class="trustml-risk-after" x="{x0}" y="{risk_y + bar + 2}" width="{_fixed(rx(d["risk_after"]) - x0, 1)}" height="{bar}" fill="{after}"/>',
           f'<text x="{_fixed(rx(d["risk_before"]) + 4, 1)}" y="{risk_y + bar - 1}">{_pct(d["risk_before"])}</text>',
           f'<text x="{_fixed(rx(d["risk_after"]) + 4, 1)}" y="{risk_y + 2 * bar + 1}">{_pct(d["risk_after"])}</text>']
    for i, r in enumerate(p):
        y = pil_y + i * row
        out += [f'<text x="{lx}" y="{y + bar + 4}" text-anchor="end">{_e(r["label"])}</text>',
                rect(r["before"], y, GREY, "trustml-bar-before"), rect(r["after"], y + bar + 1, RED if r["after"] > 0 else GREEN, "trustml-bar-after")]
    yb = pil_y + len(p) * row
    out += [f'<line x1="{_fixed(xz, 1)}" y1="{pil_y - 4}" x2="{_fixed(xz, 1)}" y2="{yb}" stroke="black" stroke-width="0.6"/>',
            f'<text x="{x0}" y="{yb + 12}">{_num(-m)}</text><text x="{x1}" y="{yb + 12}" text-anchor="end">+{_num(m)}</text>',
            f'<text x="{_fixed(xz, 1)}" y="{yb + 26}" text-anchor="middle">pillar contribution to churn risk (log-odds; right = raises risk)</text></svg>']
    return "".join(out)


def _survival_svg(s: dict) -> str:
    """The customer's survival curve S(k), k = 0..H (S(0) = 1), as they are and after the changes: steps at each month."""
    width, x0, x1, y0, y1, H = 560, 48, 540, 52, 196, s["horizon"]
    ht = y1 + 36

    def xs(k):
        return x0 + ((x1 - x0) * k) / H

    def ys(v):
        return y1 - (y1 - y0) * v

    def path(S):
        return f"M{_fixed(xs(0), 1)},{_fixed(ys(1), 1)}" + "".join(f"H{_fixed(xs(i + 1), 1)}V{_fixed(ys(v), 1)}" for i, v in enumerate(S))
    after = RED if s["months_after"] < s["months_before"] - 1e-12 else GREEN
    step = max(1, -(-H // 12))
    out = [f'<svg class="trustml-survival" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{ht}" viewBox="0 0 {width} {ht}" '
           f'font-family="sans-serif" font-size="11"><title>{_e(SURVIVAL_KIND)}</title>',
           f'<text x="{x0}" y="12" font-weight="bold">Probability of still being a customer ({_e(SURVIVAL_KIND)})</text>',
           f'<line x1="{x0}" y1="23" x2="{x0 + 16}" y2="23" stroke="{GREY}" stroke-width="2.5"/><text class="trustml-surv-months-before" '
           f'x="{x0 + 20}" y="27">as they are: {_fixed(s["months_before"], 1)} expected months of the next {H}</text>',
           f'<line x1="{x0}" y1="37" x2="{x0 + 16}" y2="37" stroke="{after}" stroke-width="1.5"/><text class="trustml-surv-months-after" '
           f'x="{x0 + 20}" y="41">after the changes: {_fixed(s["months_after"], 1)} expected months ({_sg(s["months_after"] - s["months_before"], 1)})</text>',
           f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black" stroke-width="0.6"/><line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" '
           'stroke="black" stroke-width="0.6"/>']
    out += [f'<text x="{x0 - 4}" y="{_fixed(ys(v) + 4, 1)}" text-anchor="end">{round(100 * v)}%</text>' for v in (0, 0.5, 1)]
    out += [f'<text x="{_fixed(xs(k), 1)}" y="{y1 + 14}" text-anchor="middle">{k}</text>' for k in range(0, H + 1, step)]
    out += [f'<text x="{_fixed((x0 + x1) / 2, 1)}" y="{y1 + 30}" text-anchor="middle">{_e(s["time_label"])}</text>',
            f'<path class="trustml-surv-before" d="{path(s["before"])}" fill="none" stroke="{GREY}" stroke-width="2.5"/>',
            f'<path class="trustml-surv-after" d="{path(s["after"])}" fill="none" stroke="{after}" stroke-width="1.5"/></svg>']
    return "".join(out)


def _causal_html(c: list, moved: list) -> str:
    """Beside the model's answer: each moved lever's causal estimate (or that it has none), then every lever's in a table."""
    if not c:
        return ""

    def est(r):
        return f"{_sg(r['causal'], 2)} [95% {_sg(r['low'], 2)}, {_sg(r['high'], 2)}]"

    def th(t):
        return f'<th style="text-align:left;padding:1px 6px">{t}</th>'

    def td(t):
        return f'<td style="padding:1px 6px">{t}</td>'
    line = "; ".join(
        f"{_e(r['label'])}: no causal estimate for this lever ({MODEL_KIND} only)" if r["causal"] is None
        else f"{_e(r['label'])}: {CAUSAL_KIND} of the policy &#39;{_e(r['policy'])}&#39;: {est(r)} points"
        + ("" if r["model"] is None else f" ({MODEL_KIND} for the same policy: {_sg(r['model'], 2)} points)")
        for r in c if r["moved"])
    rows = "".join(
        ('<tr class="trustml-causal-row trustml-moved" style="font-weight:bold">' if r["moved"] else '<tr class="trustml-causal-row">')
        + td(_e(r["label"])) + td(_e(r["policy"])) + td("n/a" if r["model"] is None else _sg(r["model"], 2))
        + td("no causal estimate for this lever" if r["causal"] is None else est(r)) + "</tr>" for r in c)
    return ((f'<div class="trustml-causal-line" style="margin:2px 0">Beside the model&#39;s answer: {line}</div>' if moved else "")
            + '<table class="trustml-causal" style="border-collapse:collapse;margin:4px 0"><caption style="text-align:left;font-weight:bold">'
            "Each lever&#39;s policy for this customer: change in churn risk in the label window, points (negative = fewer churners; "
            "moved levers in bold)</caption>"
            f"<tr>{th('lever')}{th('policy')}{th(MODEL_KIND + ' (the policy&#39;s feature change)')}{th(CAUSAL_KIND + ' [95% interval]')}</tr>"
            f"{rows}</table>")


def _view_html(d: dict) -> str:
    moved = d.get("moved") or []
    change = 100 * (d["risk_after"] - d["risk_before"])
    arrow = f" &rarr; <b>{_pct(d['risk_after'])}</b> ({_sg(change, 1)} points: {_e(NOTE)})" if moved else ""
    changes = ("Changes: " + "; ".join(f"{_e(c['label'])} {_e(c['own'])} &rarr; {_e(c['value'])}" for c in moved)) if moved \
        else "No lever moved: the customer as they are."
    rows = "".join(f'<tr><td style="padding:2px 6px">{_e(r["pillar"])}</td><td style="padding:2px 6px">{_e(r["reason"])}</td></tr>'
                   for r in d.get("reasons") or []) or '<tr><td colspan="2" style="padding:2px 6px">nothing raises this risk above the average</td></tr>'
    return (f'<div class="trustml-risk" style="font-size:14px">{_e(d["customer"])}: churn risk <b>{_pct(d["risk_before"])}</b>{arrow}</div>'
            f'<div class="trustml-cohort" style="margin:2px 0">{_e(d.get("cohort", ""))}</div>'
            f'<div class="trustml-changes" style="margin:2px 0;color:#555">{changes}</div>'
            + _causal_html(d.get("causal") or [], moved)
            + f'<div style="display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap">{_svg(d)}'
            + (_survival_svg(d["survival"]) if (d.get("survival") or {}).get("horizon") else "")
            + '<table class="trustml-reasons" style="border-collapse:collapse;max-width:520px"><caption style="text-align:left;font-weight:bold">'
            f'Why the model predicts this risk, after the changes (SHAP reasons; associations, not causes)</caption>{rows}</table></div>')


def static_html(state: dict) -> str:
    """Self-contained HTML of an explorer from its chart's state (`ExplorerChart` traits): what a report shows.

    Example
    -------
    >>> d = {"customer": "cust-0", "risk_before": 0.4, "risk_after": 0.3, "moved": [{"label": "Promises broken", "own": "2", "value": "0"}],
    ...      "pillars": [{"label": "Promises kept", "before": 0.5, "after": -0.1}], "reasons": [], "cohort": "", "levers": []}
    >>> "&rarr; <b>30.0%</b>" in static_html(d) and static_html(d).count("<svg") == 1
    True
    """
    levers_rows = "".join(
        f'<tr><td style="padding:1px 6px">{_e(x["label"])}</td><td style="padding:1px 6px">{_e(x["own"])}</td>'
        f'<td style="padding:1px 6px">{"(no value: control disabled)" if x["disabled"] else _e(x["value"])}</td></tr>'
        for x in state.get("levers") or [])
    picked = f'<div style="margin:2px 0">Customer: {_e(state.get("picked") or state["customer"])}</div>' if state.get("picked") else ""
    return (f'<div class="trustml-explorer-static" style="font-family:sans-serif;font-size:12px">'
            f'<div style="color:#555">trustml what-if explorer (static view of the widget as it was; run the notebook to move the levers)</div>'
            f'{picked}{_view_html(state)}'
            + (f'<table class="trustml-levers" style="border-collapse:collapse;margin-top:6px"><caption style="text-align:left;font-weight:bold">'
               f'Levers the company controls</caption><tr><th style="text-align:left;padding:1px 6px">lever</th>'
               f'<th style="text-align:left;padding:1px 6px">customer\'s value</th><th style="text-align:left;padding:1px 6px">setting</th></tr>'
               f'{levers_rows}</table>' if levers_rows else "")
            + "</div>")


def freeze_explorers(nb):
    """A copy of an executed notebook whose explorers are static HTML of their final state, for nbconvert.

    Each output an `Explorer` displayed keeps its text and gets `static_html` of its chart's state as
    stored in the notebook's widget metadata (nbclient `store_widget_state=True`), i.e. as it was when
    the notebook finished, else as it was displayed; its live widget view is dropped, so HTML exporters
    show it with no widget JavaScript and no network. Widget metadata is dropped when no live widget
    is left. Other outputs are untouched.

    Example
    -------
    >>> import nbformat
    >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output(
    ...     "display_data", {"text/plain": "x", "text/html": "<svg></svg>", WIDGET_VIEW: {"model_id": "m"}},
    ...     metadata={"trustml": {"explorer_chart": "m"}})])])
    >>> sorted(freeze_explorers(nb).cells[0].outputs[0].data)
    ['text/html', 'text/plain']
    """
    nb = copy.deepcopy(nb)
    widgets = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    live = False
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            chart = out.get("metadata", {}).get("trustml", {}).get("explorer_chart")
            if chart and WIDGET_VIEW in data:
                state = widgets.get(chart, {}).get("state")
                if state and "risk_before" in state:
                    data["text/html"] = static_html(state)
                del data[WIDGET_VIEW]
            elif WIDGET_VIEW in data:
                live = True
    if not live:
        nb.metadata.pop("widgets", None)
    return nb
