"""The what-if explorer driven programmatically, as a user would drive it, without a browser."""

import polars as pl
import pytest

from trustml.explorer import Explorer
from trustml.whatif import apply_levers


@pytest.fixture()
def explorer(model, table):
    latest = table.frame.filter(pl.col("snapshot_date") == table.frame["snapshot_date"].max())
    return Explorer(model, latest, top=10)


def test_customers_are_listed_riskiest_first_with_pseudonyms(explorer, model):
    labels = [label for label, _ in explorer.customer.options]
    risks = model.predict_risk(explorer.frame[[i for _, i in explorer.customer.options]])
    assert list(risks) == sorted(risks, reverse=True)
    assert all("cust-" in label for label in labels)
    raw = set(explorer.frame["customer_id"].to_list())
    assert not any(r in label for label in labels for r in raw)


def test_moving_a_slider_updates_risk_chart_and_reasons(explorer, model):
    before_html, before_png = explorer.risk.value, explorer.chart.value
    lever = "marketing_contact"
    control = explorer.controls[lever]
    control.value = control.min if control.value != control.min else control.max  # as a user drags it
    r = explorer.result
    assert r.settings == {lever: control.value}
    expected = model.predict_risk(apply_levers(explorer.row, {lever: control.value}, model.registry))[0]
    assert r.risk_after == pytest.approx(float(expected))
    assert explorer.risk.value != before_html and f"{r.risk_after:.1%}" in explorer.risk.value
    assert explorer.chart.value != before_png and explorer.chart.value[:4] == b"\x89PNG"
    assert "<li>" in explorer.reasons.value


def test_reset_button_puts_the_customer_back(explorer):
    original = {k: c.value for k, c in explorer.controls.items()}
    explorer.set(marketing_contact=0, promise_broken=0)
    assert explorer.settings
    explorer.reset_button.click()
    assert explorer.settings == {} and {k: c.value for k, c in explorer.controls.items()} == original
    assert explorer.result.risk_after == explorer.result.risk_before


def test_choosing_another_customer_loads_their_values(explorer):
    explorer.set(marketing_contact=0)
    second = explorer.customer.options[1][1]
    explorer.customer.value = second
    assert explorer.settings == {}
    row = explorer.frame[second]
    c = explorer.controls["marketing_contact"]
    assert c.value == pytest.approx(min(row["marketing_contact__count_30d"][0], c.max))
    assert explorer.result.customer in explorer.risk.value


def test_levers_without_a_value_are_disabled(explorer):
    for i in range(len(explorer.customer.options)):
        explorer.customer.value = explorer.customer.options[i][1]
        hours = explorer.row["resolution_hours__mean_90d"][0]
        assert explorer.controls["resolution_hours"].disabled == (hours is None)


def test_display_bundle_is_a_widget_with_a_readable_text_fallback(explorer):
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"].startswith("trustml what-if explorer\ncust-")


def test_unknown_lever_is_a_clear_error(explorer):
    with pytest.raises(KeyError, match="no lever 'tenure_days'"):
        explorer.set(tenure_days=3)
