"""The what-if explorer in a real browser: JupyterLab on localhost, Debian's Chromium driven by Playwright.

- notebooks/06_what_if_explorer.ipynb runs in JupyterLab and its slider changes the risk (screenshot in test-artifacts/);
- on a small notebook, 50 slider moves each update the chart drawn in the browser (timed as in
  benchmarks/whatif_latency.py, whose functions these tests use; no timing is asserted);
- a fast burst of moves ends on the last value;
- an executed notebook exported to HTML as `trustml report` does shows the explorer offline.

Chromium comes from Debian's packages (scripts/test.sh installs it when it can); Playwright
launches that binary, so no browser is downloaded.
"""

import importlib.util
import shutil

import numpy as np
import pytest
from support import ROOT

spec = importlib.util.spec_from_file_location("whatif_latency", ROOT / "benchmarks" / "whatif_latency.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

CHROMIUM = bench.chromium()
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="Chromium not installed: apt-get install chromium "
                                "(scripts/test.sh does it when run as root)")
NOTEBOOK = "06_what_if_explorer.ipynb"
SMALL = "explorer_small.ipynb"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, root / NOTEBOOK)
    bench.explorer_notebook(root / SMALL, n_customers=1500, n_months=15, seed=0)
    with bench.jupyter_lab(root, timeout=90) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with bench.browser(CHROMIUM) as b:
        yield b


@pytest.fixture(scope="module")
def small(lab, browser):
    """The small explorer notebook, run in JupyterLab."""
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    bench.run_in_lab(page, lab, SMALL)
    yield page
    bench.shutdown_kernel(page)
    page.close()


def _chart(page) -> dict:
    return page.evaluate("""() => { const r = document.querySelector('.trustml-explorer-view');
        return {version: Number(r.dataset.version), risk: r.querySelector('.trustml-risk').textContent,
                changes: r.querySelector('.trustml-changes').textContent, bars: r.querySelectorAll('svg.trustml-chart rect.trustml-bar-after').length,
                widths: [...r.querySelectorAll('svg.trustml-chart rect')].map(e => e.getAttribute('width')).join(',')}; }""")


def test_moving_a_slider_in_jupyterlab_changes_the_risk(lab, browser):
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    bench.run_in_lab(page, lab, NOTEBOOK)
    risk = page.locator(".trustml-explorer-view .trustml-risk")
    before = risk.text_content()
    assert "churn risk" in before and "cust-" in before and "→" not in before
    curves = page.locator(".trustml-explorer-view svg.trustml-survival")
    assert curves.locator("path.trustml-surv-before").get_attribute("d") == curves.locator("path.trustml-surv-after").get_attribute("d")
    slider = page.locator(".widget-slider", has=page.get_by_text("Marketing contacts in the last 30 days", exact=True))
    readout = slider.locator(".widget-readout")
    readout.scroll_into_view_if_needed()
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("0")
    page.keyboard.press("Enter")
    page.wait_for_function("before => { const e = document.querySelector('.trustml-explorer-view .trustml-risk'); return e && e.textContent !== before; }",
                           arg=before, timeout=60_000)
    after = risk.text_content()
    assert "→" in after and "points" in after and "not a causal effect" in after
    assert "Marketing contacts in the last 30 days" in page.locator(".trustml-explorer-view .trustml-changes").text_content()
    # issue 14: the causal estimate (double ML) beside the model's answer; issue 15: the survival curve before and after
    view = page.locator(".trustml-explorer-view")
    assert "causal estimate (double ML)" in view.locator("table.trustml-causal").text_content()
    assert "Marketing contacts in the last 30 days:" in view.locator(".trustml-causal-line").text_content()
    curves = view.locator("svg.trustml-survival")
    before_d, after_d = (curves.locator(f"path.trustml-surv-{k}").get_attribute("d") for k in ("before", "after"))
    assert before_d != after_d and before_d.count("H") == after_d.count("H") >= 6   # the move changed the curve after
    assert "expected months" in curves.locator(".trustml-surv-months-after").text_content()
    risk.scroll_into_view_if_needed()
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / "what_if_explorer.png"))
    assert (out / "what_if_explorer.png").stat().st_size > 10_000
    bench.shutdown_kernel(page)
    page.close()


def test_the_chart_follows_fifty_slider_moves(small):
    first = _chart(small)
    assert first["bars"] > 0 and "→" not in first["risk"]
    r = bench.time_slider_moves(small, 50)
    assert len(r["dom"]) == len(r["frame"]) == 50 and all(t > 0 for t in r["dom"])
    assert r["versions"] == list(range(first["version"] + 1, first["version"] + 51))   # one chart update per move, none lost
    assert len(set(r["values"])) > 5 and all(a != b for a, b in zip(r["values"], r["values"][1:], strict=False))
    last = _chart(small)
    if "No lever moved" in last["changes"]:   # back on the customer's own value
        assert "→" not in last["risk"]
    else:
        assert last["changes"].rstrip().endswith(f"→ {r['values'][-1]:.3g}") and "→" in last["risk"]
    print(f"\ninput -> chart DOM: p50 {np.percentile(r['dom'], 50):.1f} ms, p99 {np.percentile(r['dom'], 99):.1f} ms "
          f"(kernel p50 {np.percentile(r['kernel'], 50):.1f} ms); see benchmarks/whatif_latency.py")


def test_a_fast_burst_of_moves_ends_on_the_last_value(small):
    handle = bench.slider_handle(small)
    handle.focus()
    handle.press("Home")
    small.wait_for_function("() => document.querySelector('.trustml-explorer-view .trustml-changes').textContent.includes('No lever moved')"
                            " || document.querySelector('.trustml-explorer-view .trustml-changes').textContent.endsWith('→ 0')")
    v0 = _chart(small)["version"]
    for _ in range(9):
        handle.press("ArrowRight", delay=0)   # faster than the kernel answers: ipywidgets sends the latest value when it is free
    assert float(handle.get_attribute("aria-valuenow")) == 9
    small.wait_for_function("() => document.querySelector('.trustml-explorer-view .trustml-changes').textContent.trimEnd().endsWith('→ 9')",
                            timeout=60_000)
    small.wait_for_timeout(1000)   # nothing stale arrives afterwards
    c = _chart(small)
    assert c["changes"].rstrip().endswith("→ 9") and v0 < c["version"] <= v0 + 9


def test_browser_and_report_draw_the_same_chart(browser):
    """explorer.js (live) and explorer.py (static HTML) render the same markup from the same data."""
    from trustml.explorer import ExplorerChart, _view_html
    d = {"customer": "cust-0a1b2c3d4e", "risk_before": 0.48, "risk_after": 0.1355, "cohort": "Cohort (plan = basic): <mean>",
         "moved": [{"label": "Marketing contacts in the last 30 days", "own": "12", "value": "0"}],
         "pillars": [{"label": "Service quality", "before": 0.525, "after": 0.546}, {"label": "Respect for time", "before": 2.0033, "after": -0.1101},
                     {"label": "Engagement & <usage>", "before": -0.3412, "after": -0.4022}],
         "reasons": [{"pillar": "Transparency", "reason": "Unannounced price changes: 2: +5.1 points of churn risk"}], "version": 3, "compute_ms": 1.0}
    page = browser.new_page()
    js = ExplorerChart()._esm
    live = page.evaluate("async ([js, d]) => (await import('data:text/javascript,' + encodeURIComponent(js))).view(d)", [js, d])
    page.close()
    assert live == _view_html(d)
    assert _view_html({**d, "moved": [], "reasons": []}) != live   # the comparison can tell charts apart
    # with causal estimates beside the model's answer and the survival curve before and after
    full = {**d, "causal": [
        {"label": "Marketing contacts in the last 30 days", "policy": "at most one marketing contact a month", "model": -20.3703,
         "causal": -16.755, "low": -24.4583, "high": -9.052, "moved": True},
        {"label": "Promises broken & <kept>", "policy": "keep every promise (the customer's)", "model": 0.0, "causal": -0.004,
         "low": -0.0081, "high": 1.3721, "moved": False},
        {"label": "Privacy incidents", "policy": "", "model": None, "causal": None, "low": None, "high": None, "moved": False}],
        "survival": {"horizon": 12, "time_label": "months ahead", "months_before": 8.0496, "months_after": 9.25,
                     "before": [0.93 ** k for k in range(1, 13)], "after": [0.96 ** k for k in range(1, 13)]}}
    page = browser.new_page()
    live = page.evaluate("async ([js, d]) => (await import('data:text/javascript,' + encodeURIComponent(js))).view(d)", [js, full])
    page.close()
    assert live == _view_html(full) and live != _view_html({**full, "survival": {**full["survival"], "after": full["survival"]["before"]}})
    assert "trustml-surv-after" in live and "no causal estimate for this lever" in live and "causal estimate (double ML)" in live


def test_report_html_shows_the_explorer_offline(tmp_path, browser):
    import nbformat
    from nbconvert import HTMLExporter

    from trustml.explorer import freeze_explorers
    from trustml.report import execute
    path = bench.explorer_notebook(tmp_path / "explorer.ipynb", n_customers=1500, n_months=15, seed=0,
                                   extra=("explorer.set(marketing_contact=0, promise_broken=0)\nprint(explorer.summary())",))
    nb = execute(nbformat.read(path, as_version=4), tmp_path)   # as trustml report runs a notebook: widget state stored
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    charts = [s["state"] for s in state.values() if s["state"].get("_anywidget_id") == "trustml.explorer.ExplorerChart"]
    assert len(charts) == 1 and charts[0]["moved"]   # the stored state is the final one, after explorer.set
    exporter = HTMLExporter(template_name="lab")
    (tmp_path / "frozen.html").write_text(exporter.from_notebook_node(freeze_explorers(nb))[0], encoding="utf-8")
    (tmp_path / "live.html").write_text(exporter.from_notebook_node(nb)[0], encoding="utf-8")
    context = browser.new_context(offline=True)
    blocked = []

    def no_network(route):
        if route.request.url.startswith("file:"):
            return route.continue_()
        blocked.append(route.request.url)
        return route.abort()
    context.route("**/*", no_network)
    page = context.new_page()
    page.goto((tmp_path / "frozen.html").as_uri())
    chart = page.locator(".trustml-explorer-static svg.trustml-chart")
    chart.wait_for(state="visible", timeout=10_000)
    assert chart.locator("rect.trustml-bar-after").count() == len(charts[0]["pillars"])
    risk = page.locator(".trustml-explorer-static .trustml-risk").text_content()
    assert "→" in risk and f"{charts[0]['risk_after']:.1%}" in risk and "not a causal effect" in risk
    levers = page.locator(".trustml-explorer-static table.trustml-levers").text_content()
    assert "Marketing contacts in the last 30 days" in levers and page.locator(".trustml-explorer-static table.trustml-reasons").count() == 1
    assert not any("html-manager" in u for u in blocked), blocked   # no widget JavaScript needed
    # the same notebook exported without freezing: nbconvert picks the live widget view, which needs the network
    page.goto((tmp_path / "live.html").as_uri())
    page.wait_for_load_state("load")
    assert page.locator("svg.trustml-chart").count() == 0
    context.close()


def test_report_html_shows_causal_estimates_and_survival_curves_offline(tmp_path, browser):
    """An explorer given causal effects and a survival model, executed as `trustml report` does, frozen, opened offline."""
    import nbformat
    from nbconvert import HTMLExporter

    from trustml.explorer import freeze_explorers
    from trustml.report import execute
    cells = ["import trustml as tm\nfrom trustml.causal import lever_effects\nfrom trustml.survival import fit_survival\n"
             "study = tm.Study.load(n_customers=1500, n_months=15, seed=0, trials=0)",
             "effects = lever_effects(study.table.labelled(), study.events, study.registry, ['promises'])\n"
             "surv = fit_survival(study.table, horizon=6, n_estimators=300)",
             "explorer = tm.Explorer(study.trained, study.latest, effects=effects, events=study.events, survival=surv)\nexplorer",
             "c = explorer.controls['promise_broken']\nexplorer.set(promise_broken=c.min if c.value != c.min else c.max)\n"
             "print(explorer.summary())"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells],
                                  metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb = execute(nb, tmp_path)
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    chart = next(s["state"] for s in state.values() if s["state"].get("_anywidget_id") == "trustml.explorer.ExplorerChart")
    assert chart["moved"] and chart["survival"]["after"] != chart["survival"]["before"]
    (tmp_path / "frozen.html").write_text(HTMLExporter(template_name="lab").from_notebook_node(freeze_explorers(nb))[0], encoding="utf-8")
    context = browser.new_context(offline=True)
    page = context.new_page()
    page.goto((tmp_path / "frozen.html").as_uri())
    view = page.locator(".trustml-explorer-static")
    curves = view.locator("svg.trustml-survival")
    curves.wait_for(state="visible", timeout=10_000)
    before_d, after_d = (curves.locator(f"path.trustml-surv-{k}").get_attribute("d") for k in ("before", "after"))
    assert before_d != after_d and before_d.count("V") == after_d.count("V") == 6
    s = chart["survival"]
    assert f"{s['months_before']:.1f} expected months of the next 6" in curves.text_content()
    assert f"after the changes: {s['months_after']:.1f} expected months" in curves.text_content()
    promise = next(r for r in chart["causal"] if r["causal"] is not None)
    line = view.locator(".trustml-causal-line").text_content()
    assert "causal estimate (double ML) of the policy 'keep every promise (no promise broken)'" in line
    assert f"{promise['causal']:+.2f} [95% {promise['low']:+.2f}, {promise['high']:+.2f}] points" in line
    table = view.locator("table.trustml-causal").text_content()
    assert "model association (the policy's feature change)" in table and "no causal estimate for this lever" in table
    assert "not a causal effect" in view.locator(".trustml-risk").text_content()
    context.close()
