"""The what-if explorer for JupyterLab: ipywidgets controls bound to `trustml.whatif`, a chart drawn in the browser.

Pick a customer (the top-N riskiest, or find one by pseudonymised id or your own id: never a
dropdown of every customer), move the actionable levers the feature registry offers (sliders
within valid ranges, toggles for categories), and see risk, the pillar chart and the reasons
update; Reset puts the customer back as they are. The kernel only computes (`what_if`) and sends
numbers; the chart is SVG drawn by `explorer.js` (an anywidget) in the browser. Slider moves are
sent while dragging; ipywidgets keeps at most one change in flight and sends the latest value when
the kernel is free, so a fast drag never queues stale updates. Every effect is labelled as what it
is: a model association, not a causal effect.

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
import time
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
from trustml.whatif import ASSOCIATION, Lever, WhatIf, levers, what_if

__all__ = ["Explorer", "ExplorerChart", "freeze_explorers", "static_html", "NOTE", "LAB_LOW_LATENCY"]

NOTE = ASSOCIATION  # the label of every model what-if (trustml.whatif)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
GREY, RED, GREEN = "#bbbbbb", "#d62728", "#2ca02c"


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
    `draw` is accepted for compatibility and has no effect: the kernel never draws, the browser does.
    """

    def __init__(self, trained: TrainedModel, frame: pl.DataFrame, *, top: int = 50, cohort_column: str | None = "plan",
                 id_column: str = "customer_id", sample: int = 20_000, seed: int = 0, draw: bool = True):
        self.trained, self.frame, self.id_column, self.top = trained, frame, id_column, top
        self._risk = trained.predict_risk(frame)
        self._order = np.argsort(-self._risk, kind="stable")
        self._rank = np.empty(frame.height, dtype=np.int64)
        self._rank[self._order] = np.arange(frame.height)
        self._pseudonyms: pl.Series | None = None
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
        self._loading = False
        self._cohort_for: int | None = None
        self.result: WhatIf | None = None
        self.customer.observe(lambda _: self.load(), names="value")
        self.search.observe(lambda ch: self.find(ch["new"]), names="value")
        for c in self.controls.values():
            c.observe(lambda _: self.update(), names="value")
        self.reset_button.on_click(lambda _: self.reset())
        head = (f"<b>Levers the company controls</b> (linked features follow by the same ratio; effects are a {NOTE})"
                if self.levers else f"<b>{NO_LEVERS}</b>")
        self.widget = W.VBox([W.HBox([self.customer, self.search]), self.found, self.chart, W.HTML(head),
                              *self.controls.values(), self.reset_button])
        self.load()

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

    def find(self, query: str) -> Explorer:
        """List the customers whose pseudonym starts with `query` (or whose own id is `query`), riskiest first.

        At most `top` are listed and the first is shown; an empty query lists the riskiest again.
        """
        q = (query or "").strip()
        if not q:
            idx, text = self._order[: self.top], f"the {min(self.top, self.frame.height):,} riskiest of {self.frame.height:,} customers"
        else:
            if self._pseudonyms is None:  # once, on the first search: one hash per customer
                ids = self.frame[self.id_column].to_list() if self.id_column in self.frame.columns else [f"row {i}" for i in range(self.frame.height)]
                self._pseudonyms = pl.Series(pseudonymise(ids))
            own = pseudonymise([q])[0]
            hit = (self._pseudonyms.str.starts_with(q.lower()) | (self._pseudonyms == own)).to_numpy()
            match = np.nonzero(hit)[0]
            idx = match[np.argsort(self._rank[match], kind="stable")][: self.top]
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
            elif abs(float(now) - float(was)) > 1e-6 * max(1.0, abs(float(was))):   # float noise from the browser is no move
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
        r = what_if(self.trained, self.row, self.settings, id_column=self.id_column)
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
        }
        with self.chart.hold_sync():   # one comm message per update
            for k, v in data.items():
                setattr(self.chart, k, v)
            self.chart.compute_ms = 1000 * (time.perf_counter() - t0)
            self.chart.sent_at = 1000 * time.time()
            self.chart.version += 1
        return self

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
    return html.escape(str(x), quote=True)


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
        return (f'<rect class="{cls}" x="{min(x(0), x(v)):.1f}" y="{y:.1f}" width="{abs(x(v) - x(0)):.1f}" height="{bar}" fill="{fill}"/>')
    out = [f'<svg class="trustml-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'font-family="sans-serif" font-size="11"><title>{_e(NOTE)}</title>',
           f'<rect x="{x0}" y="4" width="10" height="8" fill="{GREY}"/><text x="{x0 + 14}" y="12">as they are</text>',
           f'<rect x="{x0 + 100}" y="4" width="10" height="8" fill="{after}"/><text x="{x0 + 114}" y="12">after the changes (what the model predicts)</text>',
           f'<text x="{lx}" y="{risk_y + bar + 4}" text-anchor="end" font-weight="bold">Churn risk</text>',
           f'<rect class="trustml-risk-before" x="{x0}" y="{risk_y}" width="{rx(d["risk_before"]) - x0:.1f}" height="{bar}" fill="{GREY}"/>',
           f'<rect class="trustml-risk-after" x="{x0}" y="{risk_y + bar + 2}" width="{rx(d["risk_after"]) - x0:.1f}" height="{bar}" fill="{after}"/>',
           f'<text x="{rx(d["risk_before"]) + 4:.1f}" y="{risk_y + bar - 1}">{d["risk_before"]:.1%}</text>',
           f'<text x="{rx(d["risk_after"]) + 4:.1f}" y="{risk_y + 2 * bar + 1}">{d["risk_after"]:.1%}</text>']
    for i, r in enumerate(p):
        y = pil_y + i * row
        out += [f'<text x="{lx}" y="{y + bar + 4}" text-anchor="end">{_e(r["label"])}</text>',
                rect(r["before"], y, GREY, "trustml-bar-before"), rect(r["after"], y + bar + 1, RED if r["after"] > 0 else GREEN, "trustml-bar-after")]
    yb = pil_y + len(p) * row
    out += [f'<line x1="{xz:.1f}" y1="{pil_y - 4}" x2="{xz:.1f}" y2="{yb}" stroke="black" stroke-width="0.6"/>',
            f'<text x="{x0}" y="{yb + 12}">{-m:.1f}</text><text x="{x1}" y="{yb + 12}" text-anchor="end">+{m:.1f}</text>',
            f'<text x="{xz:.1f}" y="{yb + 26}" text-anchor="middle">pillar contribution to churn risk (log-odds; right = raises risk)</text></svg>']
    return "".join(out)


def _view_html(d: dict) -> str:
    moved = d.get("moved") or []
    change = 100 * (d["risk_after"] - d["risk_before"])
    arrow = f" &rarr; <b>{d['risk_after']:.1%}</b> ({change:+.1f} points: {_e(NOTE)})" if moved else ""
    changes = ("Changes: " + "; ".join(f"{_e(c['label'])} {_e(c['own'])} &rarr; {_e(c['value'])}" for c in moved)) if moved \
        else "No lever moved: the customer as they are."
    rows = "".join(f'<tr><td style="padding:2px 6px">{_e(r["pillar"])}</td><td style="padding:2px 6px">{_e(r["reason"])}</td></tr>'
                   for r in d.get("reasons") or []) or '<tr><td colspan="2" style="padding:2px 6px">nothing raises this risk above the average</td></tr>'
    return (f'<div class="trustml-risk" style="font-size:14px">{_e(d["customer"])}: churn risk <b>{d["risk_before"]:.1%}</b>{arrow}</div>'
            f'<div class="trustml-cohort" style="margin:2px 0">{_e(d.get("cohort", ""))}</div>'
            f'<div class="trustml-changes" style="margin:2px 0;color:#555">{changes}</div>'
            f'<div style="display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap">{_svg(d)}'
            '<table class="trustml-reasons" style="border-collapse:collapse;max-width:520px"><caption style="text-align:left;font-weight:bold">'
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
