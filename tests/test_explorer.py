"""The what-if explorer driven programmatically, as a user would drive it, without a browser."""

import re

import numpy as np
import polars as pl
import pytest

from trustml.explorer import NOTE, WIDGET_VIEW, Explorer, freeze_explorers, static_html
from trustml.privacy import pseudonymise
from trustml.whatif import apply_levers


@pytest.fixture()
def latest(table):
    return table.frame.filter(pl.col("snapshot_date") == table.frame["snapshot_date"].max())


@pytest.fixture()
def explorer(model, latest):
    return Explorer(model, latest, top=10)


def _other(explorer, lever="marketing_contact"):
    """A value of the lever other than the one shown now."""
    c = explorer.controls[lever]
    return c.min if c.value != c.min else c.max


def test_customers_are_listed_riskiest_first_with_pseudonyms(explorer, model):
    labels = [label for label, _ in explorer.customer.options]
    risks = model.predict_risk(explorer.frame[[i for _, i in explorer.customer.options]])
    assert list(risks) == sorted(risks, reverse=True) and len(labels) == 10
    assert all("cust-" in label for label in labels) and labels[0].startswith("#1 ")
    raw = set(explorer.frame["customer_id"].to_list())
    assert not any(r in label for label in labels for r in raw)


def test_moving_a_slider_sends_new_chart_data(explorer, model):
    chart = explorer.chart
    version, before = chart.version, [p["after"] for p in chart.pillars]
    lever = "marketing_contact"
    control = explorer.controls[lever]
    control.value = control.min if control.value != control.min else control.max  # as a user drags it
    r = explorer.result
    assert r.settings == {lever: control.value}
    expected = model.predict_risk(apply_levers(explorer.row, {lever: control.value}, model.registry))[0]
    assert r.risk_after == pytest.approx(float(expected)) and chart.risk_after == pytest.approx(float(expected))
    assert chart.version == version + 1 and chart.compute_ms > 0
    assert [p["after"] for p in chart.pillars] != before
    assert chart.pillars == [{"label": x["label"], "before": x["before"], "after": x["after"]} for x in r.pillars.iter_rows(named=True)]
    assert chart.moved and chart.moved[0]["label"].startswith("Marketing contacts")
    assert chart.reasons == [{"pillar": x["pillar"], "reason": x["reason"]} for x in r.reasons.iter_rows(named=True)]


def test_the_browsers_float_rounding_of_a_slider_is_no_update(explorer):
    control, version = explorer.controls["marketing_contact"], explorer.chart.version
    own = control.value
    control.value = own + own * 2e-16 + 2e-15   # what noUiSlider sends back for 10.0: 10.000000000000002
    assert control.value != own and explorer.chart.version == version and explorer.settings == {}
    control.value = own + control.step           # a real move still updates
    assert explorer.chart.version == version + 1 and explorer.settings


def test_one_message_per_update(explorer):
    sent = []
    explorer.chart._send = lambda msg, buffers=None: sent.append(msg)   # what would go over the comm
    explorer.set(marketing_contact=_other(explorer))
    updates = [m for m in sent if m.get("method") == "update"]
    assert len(updates) == 1 and {"version", "moved", "pillars"} <= set(updates[0]["state"])
    assert not any(isinstance(v, bytes) for v in updates[0]["state"].values())   # data, not images


def test_reset_button_puts_the_customer_back(explorer):
    original = {k: c.value for k, c in explorer.controls.items()}
    explorer.set(marketing_contact=0, promise_broken=0)
    assert explorer.settings
    explorer.reset_button.click()
    assert explorer.settings == {} and {k: c.value for k, c in explorer.controls.items()} == original
    assert explorer.result.risk_after == explorer.result.risk_before and explorer.chart.moved == []


def test_choosing_another_customer_loads_their_values(explorer):
    explorer.set(marketing_contact=0)
    second = explorer.customer.options[1][1]
    explorer.customer.value = second
    assert explorer.settings == {}
    row = explorer.frame[second]
    c = explorer.controls["marketing_contact"]
    assert c.value == pytest.approx(min(row["marketing_contact__count_30d"][0], c.max))
    assert explorer.chart.customer == explorer.result.customer == pseudonymise([row["customer_id"][0]])[0]


def test_an_out_of_range_customer_value_is_not_a_move(model, latest):
    i = int(np.argmax(latest["marketing_contact__count_30d"].to_numpy()))
    frame = latest.with_columns(pl.when(pl.int_range(pl.len()) == i).then(99).otherwise(pl.col("marketing_contact__count_30d"))
                                .alias("marketing_contact__count_30d"))
    ex = Explorer(model, frame, top=1).find(frame["customer_id"][i])
    assert int(ex.customer.value) == i and ex.settings == {}   # the slider shows its max, but nothing was moved


def test_levers_without_a_value_are_disabled(explorer):
    for i in range(len(explorer.customer.options)):
        explorer.customer.value = explorer.customer.options[i][1]
        hours = explorer.row["resolution_hours__mean_90d"][0]
        assert explorer.controls["resolution_hours"].disabled == (hours is None)


def test_find_by_pseudonym_prefix_or_own_id(explorer):
    frame = explorer.frame
    k = frame.height // 2   # far from the riskiest: not in the list until searched
    own, pseud = frame["customer_id"][k], pseudonymise([frame["customer_id"][k]])[0]
    explorer.find(pseud[:9])
    assert int(explorer.customer.value) in np.nonzero([p.startswith(pseud[:9]) for p in pseudonymise(frame["customer_id"].to_list())])[0]
    assert k in [i for _, i in explorer.customer.options] and "match" in explorer.found.value
    explorer.find(str(own))
    assert [i for _, i in explorer.customer.options] == [k] and explorer.chart.customer == pseud
    assert str(own) not in explorer.found.value.replace(repr(str(own)), "")   # the raw id is only echoed as typed
    explorer.find("cust-zzzz")
    assert "no customer matches" in explorer.found.value and int(explorer.customer.value) == k   # nothing changes
    explorer.search.value = pseud   # typing in the Find box, then clearing it
    assert [i for _, i in explorer.customer.options] == [k]
    explorer.search.value = ""
    assert len(explorer.customer.options) == 10 and "riskiest" in explorer.found.value


@pytest.mark.slow
def test_picker_stays_small_with_many_customers(model, latest):
    reps = 200_000 // latest.height + 1
    big = pl.concat([latest.with_columns(customer_id=pl.col("customer_id") + f"-{r}") for r in range(reps)])
    ex = Explorer(model, big, top=50)
    assert big.height > 200_000 and len(ex.customer.options) == 50
    target = big["customer_id"][big.height - 7]
    ex.find(target)
    assert int(ex.customer.value) == big.height - 7 and len(ex.customer.options) == 1
    assert "sample of" in ex.chart.cohort   # cohort means from a seeded sample, not SHAP for every customer


def test_display_bundle_is_a_widget_with_static_html_and_text(explorer):
    explorer.set(marketing_contact=_other(explorer))
    bundle, meta = explorer._repr_mimebundle_()
    assert WIDGET_VIEW in bundle and meta["trustml"]["explorer_chart"] == explorer.chart.model_id
    assert bundle["text/plain"].startswith("trustml what-if explorer\ncust-") and NOTE in bundle["text/plain"]
    page = bundle["text/html"]
    assert page.count("<svg") == 1 and "<script" not in page and NOTE in page
    assert len(re.findall(r'class="trustml-bar-after"', page)) == len(explorer.chart.pillars)
    assert f"{explorer.result.risk_after:.1%}" in page and "Marketing contacts" in page


def test_every_effect_says_it_is_a_model_association(explorer):
    explorer.set(marketing_contact=_other(explorer))
    assert NOTE in explorer.summary() and NOTE in explorer.static_html()
    assert NOTE in explorer.chart._esm and "export default" in explorer.chart._esm   # the browser chart carries the same label


def test_unknown_lever_or_value_is_a_clear_error(explorer):
    with pytest.raises(KeyError, match="no lever 'tenure_days'"):
        explorer.set(tenure_days=3)
    with pytest.raises(ValueError, match="marketing_contact"):
        explorer.set(marketing_contact=500)   # a slider would clamp it; code must not


def test_freeze_shows_the_final_state_and_drops_the_live_view(explorer):
    import nbformat
    bundle, meta = explorer._repr_mimebundle_()
    explorer.set(marketing_contact=_other(explorer))   # after display, as a later cell would
    state = {explorer.chart.model_id: {"state": explorer.chart.get_state()}}
    other = nbformat.v4.new_output("display_data", {"text/plain": "bar", WIDGET_VIEW: {"model_id": "tqdm"}})
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output("display_data", bundle, metadata=meta), other])],
                                  metadata={"widgets": {"application/vnd.jupyter.widget-state+json": {"state": state}}})
    frozen = freeze_explorers(nb)
    out = frozen.cells[0].outputs
    assert WIDGET_VIEW not in out[0].data and out[0].data["text/html"] == static_html(explorer.chart.get_state())
    assert "&rarr;" in out[0].data["text/html"] and "&rarr;" not in bundle["text/html"]
    assert WIDGET_VIEW in out[1].data and "widgets" in frozen.metadata   # other widgets stay live
    assert WIDGET_VIEW in nb.cells[0].outputs[0].data                    # the input is not modified


def test_lab_option_names_a_connection_class_that_sets_nodelay(monkeypatch):
    from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
    from traitlets.utils.importstring import import_item

    from trustml.explorer import LAB_LOW_LATENCY
    cls = import_item(LAB_LOW_LATENCY.split("=", 1)[1])   # as Jupyter Server resolves the option
    assert issubclass(cls, ZMQChannelsWebsocketConnection)
    calls = []
    monkeypatch.setattr(ZMQChannelsWebsocketConnection, "connect", lambda self: "connected")

    class Handler:
        def set_nodelay(self, value):
            calls.append(value)
    conn = cls.__new__(cls)
    conn.__dict__["_trait_values"] = {"websocket_handler": Handler()}
    assert cls.connect(conn) == "connected" and calls == [True]


def test_with_nothing_actionable_the_explorer_says_why_and_what_to_mark():
    import numpy as np
    import polars as pl

    from trustml.explorer import NO_LEVERS, Explorer
    from trustml.mapping import Mapping, flat_table
    from trustml.model import train
    rng = np.random.default_rng(0)
    n = 300
    df = pl.DataFrame({"id": [f"c{i}" for i in range(n)], "left": rng.choice(["Yes", "No"], n), "spend": rng.normal(size=n),
                       "plan": rng.choice(["a", "b"], n)})
    table = flat_table(df, Mapping.from_dict({"kind": "flat", "columns": {"id": "id", "target": "left", "positive": ["Yes"]}}))
    trained, _ = train(table, trials=0, n_estimators=20, early_stopping=False)
    ex = Explorer(trained, table.labelled())
    assert ex.levers == [] and NO_LEVERS in ex.summary() and "[actionable]" in NO_LEVERS


# --- causal estimates beside the model's answer (issue 14) -----------------------------------------

@pytest.fixture(scope="module")
def effects(table, world):
    """One lever's causal effect (double ML), on the later half of the labelled snapshots (speed)."""
    from trustml.causal import lever_effects
    rows = table.labelled()
    dates = sorted(rows["snapshot_date"].unique().to_list())
    return lever_effects(rows.filter(pl.col("snapshot_date") >= dates[len(dates) // 2]), world.events, table.registry, ["promises"])


@pytest.fixture(scope="module")
def surv(table):
    from trustml.survival import fit_survival
    return fit_survival(table, horizon=6, n_estimators=300)


@pytest.fixture()
def full(model, latest, effects, surv, world):
    return Explorer(model, latest, top=10, effects=effects, events=world.events, survival=surv)


def test_causal_estimate_sits_beside_the_model_association(full, model, effects, world):
    from trustml.causal import causal_for_rows
    from trustml.whatif import SIMULATOR_LEVERS, what_if
    row = full.row
    truth = causal_for_rows(effects, row, world.events).row(0, named=True)   # the whole event log, not the explorer's slice
    rows = {r["label"]: r for r in full.chart.causal}
    promise = rows["Promises broken in the last 90 days"]
    assert promise["causal"] == pytest.approx(truth["causal_points"], abs=1e-9)
    assert (promise["low"], promise["high"]) == pytest.approx((truth["ci_low_points"], truth["ci_high_points"]), abs=1e-9)
    assert promise["policy"] == "keep every promise (no promise broken)" and not promise["moved"]
    model_answer = what_if(model, row, SIMULATOR_LEVERS["promises"](row)).change_points   # the model's what-if for the same policy
    assert promise["model"] == pytest.approx(model_answer, abs=1e-9)
    others = [r for r in full.chart.causal if r is not promise]
    assert len(others) == len(full.levers) - 1 and all(r["causal"] is None and r["model"] is None for r in others)
    assert full.chart.causal[0]["label"] == promise["label"]   # levers with an estimate listed first
    page = full.static_html()
    assert "causal estimate (double ML) [95% interval]" in page and "model association (the policy&#39;s feature change)" in page
    assert page.count("no causal estimate for this lever") == len(others)
    assert f"{promise['causal']:+.2f} [95% {promise['low']:+.2f}, {promise['high']:+.2f}]" in page
    same = what_if(model, row, {}, effects=effects, events=world.events)   # what_if's own causal table agrees
    assert full.result.causal.equals(same.causal)


def test_a_scanned_event_log_gives_the_same_causal_estimates(full, model, latest, effects, surv, world, tmp_path):
    """A log too large to read (a report's artifacts at a million customers) is passed as a scan: each customer picked
    reads their own events, and the estimates are those of the log in memory."""
    world.events.write_parquet(tmp_path / "events.parquet", row_group_size=5_000)
    scanned = Explorer(model, latest, top=10, effects=effects, events=pl.scan_parquet(tmp_path / "events.parquet"), survival=surv)
    for i in (3, 0):
        full.customer.value, scanned.customer.value = full.customer.options[i][1], scanned.customer.options[i][1]
        assert scanned.chart.causal == full.chart.causal and scanned.result.causal.equals(full.result.causal)


def test_moving_a_lever_shows_its_causal_estimate_or_that_it_has_none(full, world, effects):
    from trustml.causal import causal_for_rows
    full.set(promise_broken=_other(full, "promise_broken"), marketing_contact=_other(full))
    moved = [r for r in full.chart.causal if r["moved"]]
    assert {r["label"] for r in moved} == {"Promises broken in the last 90 days", "Marketing contacts in the last 30 days"}
    page = full.static_html()
    line = re.search(r'<div class="trustml-causal-line"[^>]*>(.*?)</div>', page).group(1)
    assert "causal estimate (double ML) of the policy &#39;keep every promise (no promise broken)&#39;" in line
    assert "Marketing contacts in the last 30 days: no causal estimate for this lever (model association only)" in line
    assert f"model association for the same policy: {moved[0]['model']:+.2f} points" in line
    assert NOTE in page and "causal estimate (double machine learning" in full.summary() and "no causal estimate" in full.summary()
    second = full.customer.options[1][1]
    full.customer.value = second   # another customer: their own causal estimate
    truth = causal_for_rows(effects, full.frame[second], world.events)["causal_points"][0]
    assert [r["causal"] for r in full.chart.causal if r["causal"] is not None] == [pytest.approx(truth, abs=1e-9)]
    assert not any(r["moved"] for r in full.chart.causal)


def test_effects_without_the_event_log_is_a_clear_error(model, latest, effects):
    with pytest.raises(ValueError, match="events="):
        Explorer(model, latest, effects=effects)


# --- the survival curve before and after the what-if (issue 15) --------------------------------------

def _paths(page: str) -> dict:
    return dict(re.findall(r'<path class="trustml-surv-(before|after)" d="([^"]+)"', page))


def test_survival_curve_before_and_after(full, surv, model):
    from trustml.survival import lifetime_table
    row = full.row
    s = full.chart.survival
    assert s["horizon"] == surv.horizon == len(s["before"]) == len(s["after"]) and s["before"] == s["after"]
    assert s["before"] == pytest.approx(surv.survival(row)[0].tolist(), abs=1e-12)
    assert all(a >= b for a, b in zip(s["before"], s["before"][1:], strict=False))
    full.set(marketing_contact=_other(full), promise_broken=_other(full, "promise_broken"))
    s = full.chart.survival
    after = apply_levers(row, full.settings, model.registry)
    assert s["after"] == pytest.approx(surv.survival(after)[0].tolist(), abs=1e-12) and s["after"] != s["before"]
    months = lifetime_table(surv, pl.concat([row, after], how="vertical_relaxed"))["expected_months"].to_list()
    assert [s["months_before"], s["months_after"]] == pytest.approx(months, abs=1e-12)
    page = full.static_html()
    paths = _paths(page)
    assert set(paths) == {"before", "after"} and paths["before"] != paths["after"]
    assert all(p.count("H") == surv.horizon and p.count("V") == surv.horizon for p in paths.values())   # one step per month
    y = [float(v) for v in re.findall(r"V([\d.]+)", paths["after"])]
    assert y == pytest.approx([196 - 144 * v for v in s["after"]], abs=0.06)   # drawn where S(k) is
    assert "hazard model: a model association" in page and f"{s['months_after']:.1f} expected months" in page
    assert f"expected months of the next {surv.horizon}" in full.summary()


def test_survival_curve_agrees_with_the_survival_modules_plot(full, surv, model):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trustml.survival import plot_whatif_curve
    full.set(promise_broken=0)
    ax = plot_whatif_curve(surv, full.row, full.settings)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(ax.figure)
    s = full.chart.survival
    assert legend == [f"as is: {s['months_before']:.1f} expected months", f"after: {s['months_after']:.1f} expected months"]


def test_a_survival_model_on_other_features_is_a_clear_error(model, latest, surv):
    with pytest.raises(ValueError, match="survival model reads"):
        Explorer(model, latest.drop("marketing_contact__count_30d"), survival=surv)


def test_without_effects_or_survival_the_display_is_as_before(explorer):
    page = explorer.static_html()
    assert explorer.chart.causal == [] and explorer.chart.survival == {}
    assert "trustml-causal" not in page and "trustml-survival" not in page


# --- many customers: search on an index (issue 17) ----------------------------------------------------

def test_search_matches_a_scan_of_every_pseudonym(explorer):
    frame = explorer.frame
    pseud = np.array(pseudonymise(frame["customer_id"].to_list()))
    risk = explorer._risk
    for q in (pseud[3][:7], pseud[3][:6].upper(), "cust-", "cu", pseud[7]):
        hit = np.nonzero(np.char.startswith(pseud, q.lower()))[0]
        explorer.find(q)
        listed = [i for _, i in explorer.customer.options]
        assert listed == sorted(hit, key=lambda i: (-risk[i], i))[:10], q   # riskiest first, ties in frame order
        assert f"{len(hit):,} customer" in explorer.found.value
    explorer.find("cust-0g")   # not hex: no pseudonym starts so
    assert "no customer matches" in explorer.found.value


def test_precomputed_risk_is_used_and_checked(model, latest):
    risk = model.predict_risk(latest)
    a, b = Explorer(model, latest, top=5), Explorer(model, latest, top=5, risk=risk)
    assert a.customer.options == b.customer.options and a.chart.cohort == b.chart.cohort
    with pytest.raises(ValueError, match="one finite churn risk per row"):
        Explorer(model, latest, risk=risk[:-1])
    with pytest.raises(ValueError, match="not trained.predict_risk"):
        Explorer(model, latest, risk=risk[::-1])
