"""The what-if explorer in a real browser: JupyterLab on localhost, Debian's Chromium driven by Playwright.

Run all cells of notebooks/06_what_if_explorer.ipynb, move a slider, check the risk text changes,
keep a screenshot in test-artifacts/. Chromium comes from Debian's packages (scripts/test.sh
installs it when it can); Playwright launches that binary, so no browser is downloaded.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from support import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="Chromium not installed: apt-get install chromium "
                                "(scripts/test.sh does it when run as root)")
NOTEBOOK = "06_what_if_explorer.ipynb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, root / NOTEBOOK)
    port = _free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".config"), "JUPYTERLAB_WORKSPACES_DIR": str(root / ".ws"),
           "JUPYTER_RUNTIME_DIR": str(root / ".runtime")}
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             "--ServerApp.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
                             f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True", "--allow-root"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("JupyterLab did not start within 60 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser.new_page(viewport={"width": 1500, "height": 1100})
        browser.close()


def test_moving_a_slider_in_jupyterlab_changes_the_risk(lab, page):
    page.set_default_timeout(240_000)
    page.goto(f"{lab}/lab/tree/{NOTEBOOK}")
    page.wait_for_function("() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                           "return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
                           " && w.sessionContext.session.kernel.connectionStatus === 'connected'); }")
    page.evaluate("() => { const c = window.jupyterapp.commands; return c.execute('notebook:clear-all-cell-outputs')"
                  ".then(() => c.execute('notebook:run-all-cells')); }")
    # every code cell has run and the kernel is idle again
    page.wait_for_function("() => { const w = window.jupyterapp.shell.currentWidget;"
                           "const cells = w.content.widgets.filter(c => c.model.type === 'code');"
                           "return cells.every(c => c.model.executionCount !== null) && w.sessionContext.session.kernel.status === 'idle'; }")
    risk = page.locator(".trustml-risk")
    before = risk.text_content()
    assert "churn risk" in before and "cust-" in before and "→" not in before
    slider = page.locator(".widget-slider", has=page.get_by_text("Marketing contacts in the last 30 days", exact=True))
    readout = slider.locator(".widget-readout")
    readout.scroll_into_view_if_needed()
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("0")
    page.keyboard.press("Enter")
    page.wait_for_function("before => { const e = document.querySelector('.trustml-risk'); return e && e.textContent !== before; }",
                           arg=before, timeout=60_000)
    after = risk.text_content()
    assert "→" in after and "points" in after
    page.wait_for_function("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'")
    page.wait_for_timeout(500)  # let the chart image repaint
    risk.scroll_into_view_if_needed()
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    page.screenshot(path=str(out / "what_if_explorer.png"))
    assert (out / "what_if_explorer.png").stat().st_size > 10_000
