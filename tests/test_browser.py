"""The what-if explorer in a real browser: JupyterLab on localhost, Debian's Chromium driven by Selenium.

Run all cells of notebooks/06_what_if_explorer.ipynb, move a slider, check the risk text changes,
keep a screenshot in test-artifacts/. Chromium and chromedriver come from Debian's packages
(scripts/test.sh installs them when it can); nothing is downloaded at run time.
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
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Chromium/chromedriver not installed: "
                                "apt-get install chromium chromium-driver (scripts/test.sh does it when run as root)")
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
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    os.environ.setdefault("SE_AVOID_STATS", "true")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1100"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    yield driver
    driver.quit()


def _wait(driver, js: str, timeout: float = 120, what: str = ""):
    end = time.time() + timeout
    while time.time() < end:
        value = driver.execute_script(js)
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what or js}")


def test_moving_a_slider_in_jupyterlab_changes_the_risk(lab, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    browser.get(f"{lab}/lab/tree/{NOTEBOOK}")
    _wait(browser, "const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                   "return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
                   " && w.sessionContext.session.kernel.connectionStatus === 'connected');", what="the notebook's kernel")
    browser.execute_script("const c = window.jupyterapp.commands; return c.execute('notebook:clear-all-cell-outputs')"
                           ".then(() => c.execute('notebook:run-all-cells'));")
    # every cell has run: the playbook (last code cell) has printed its table
    _wait(browser, "const cells = window.jupyterapp.shell.currentWidget.content.widgets.filter(c => c.model.type === 'code');"
                   "return cells.every(c => c.model.executionCount !== null) && "
                   "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle';",
          timeout=240, what="all cells to run")
    risk = _wait(browser, "const e = document.querySelector('.trustml-risk'); return e && e.textContent;", what="the risk text")
    assert "churn risk" in risk and "cust-" in risk and "→" not in risk
    label = browser.find_element(By.XPATH, "//label[contains(., 'Marketing contacts in the last 30 days')]")
    slider = label.find_element(By.XPATH, "ancestor::div[contains(@class, 'widget-slider')][1]")
    readout = slider.find_element(By.CSS_SELECTOR, ".widget-readout")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", readout)
    readout.click()
    readout.send_keys(Keys.CONTROL, "a")
    readout.send_keys("0", Keys.ENTER)
    changed = _wait(browser, "const e = document.querySelector('.trustml-risk');"
                             f"return e && e.textContent !== {risk!r} && e.textContent;", timeout=60, what="the risk to change")
    assert "→" in changed and "points" in changed
    browser.execute_script("document.querySelector('.trustml-risk').scrollIntoView({block: 'start'});")
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    browser.save_screenshot(str(out / "what_if_explorer.png"))
    assert (out / "what_if_explorer.png").stat().st_size > 10_000
