"""What a user feels when moving a what-if slider: input event to the chart's DOM update, in JupyterLab + Chromium.

    python benchmarks/whatif_latency.py [--customers 3000 --months 18 --moves 200 --seed 0]

Starts JupyterLab on a temporary notebook that shows `tm.Explorer` on the simulated world, opens it
in Debian's Chromium (headless, driven by Playwright; no network needed), runs it, then presses the
arrow keys on a lever slider `--moves` times, one at a time. Page JavaScript times each move with
`performance.now()`: from the keydown event to the MutationObserver seeing the chart's
`data-version` change (set by `trustml/explorer.js` after drawing the SVG), and to the start of the
next animation frame (the frame that paints it). The kernel's own time per update (what_if +
packing the data) comes from the chart's `data-compute-ms`. Prints p50/p99 and ends with one JSON
line. Target: p99 < 50 ms. tests/test_browser.py uses the same functions (and asserts no timings).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import nbformat

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
SLIDER = "Marketing contacts in the last 30 days"   # a lever every customer has (a count, never missing)


def chromium() -> str | None:
    """Debian's Chromium (apt-get install chromium), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def explorer_notebook(path: Path, *, n_customers: int = 1500, n_months: int = 15, seed: int = 0, extra: tuple[str, ...] = ()) -> Path:
    """A small notebook that shows the explorer on the simulated world (plus `extra` code cells after it)."""
    cells = [nbformat.v4.new_code_cell(f"import trustml as tm\nstudy = tm.Study.load(n_customers={n_customers}, n_months={n_months}, seed={seed})"),
             nbformat.v4.new_code_cell("explorer = tm.Explorer(study.trained, study.latest)\nexplorer"),
             *[nbformat.v4.new_code_cell(c) for c in extra]]
    nb = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, path)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def jupyter_lab(root: Path, timeout: float = 60, low_latency: bool = True):
    """JupyterLab serving `root` on a free localhost port, no token; yields its URL.

    low_latency: start it as `trustml lab` does, with `trustml.explorer.LAB_LOW_LATENCY` (TCP_NODELAY on kernel websockets).
    """
    from trustml.explorer import LAB_LOW_LATENCY
    port = _free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".config"), "JUPYTERLAB_WORKSPACES_DIR": str(root / ".ws"),
           "JUPYTER_RUNTIME_DIR": str(root / ".runtime")}
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             "--ServerApp.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
                             f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True", "--allow-root",
                             *([LAB_LOW_LATENCY] if low_latency else [])],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"JupyterLab did not start within {timeout:.0f} s") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def browser(executable: str | None = None):
    """A headless Chromium (Debian's binary, launched by Playwright with CHROMIUM_FLAGS)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable or chromium(), headless=True, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


def run_in_lab(page, url: str, name: str, timeout_ms: int = 240_000) -> None:
    """Open notebook `name` in JupyterLab, run every cell, wait until the kernel is idle and the chart is drawn."""
    page.set_default_timeout(timeout_ms)
    page.goto(f"{url}/lab/workspaces/{uuid.uuid4().hex[:8]}/tree/{name}?reset")   # a fresh workspace: only this notebook open
    page.wait_for_function("() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                           "return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
                           " && w.sessionContext.session.kernel.connectionStatus === 'connected'); }")
    page.evaluate("() => { const c = window.jupyterapp.commands; return c.execute('notebook:clear-all-cell-outputs')"
                  ".then(() => c.execute('notebook:run-all-cells')); }")
    page.wait_for_function("() => { const w = window.jupyterapp.shell.currentWidget;"
                           "const cells = w.content.widgets.filter(c => c.model.type === 'code');"
                           "return cells.every(c => c.model.executionCount !== null) && w.sessionContext.session.kernel.status === 'idle'; }")
    page.wait_for_selector(".trustml-explorer-view[data-version] svg.trustml-chart")


def shutdown_kernel(page) -> None:
    """Stop the kernel of the notebook open in `page` (frees the CPU before the next notebook runs)."""
    page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")


WS_PROBE_JS = """(() => { const Orig = window.WebSocket; const dec = new TextDecoder();
  window.WebSocket = class extends Orig { constructor(...a) { super(...a);
    this.addEventListener('message', (e) => { const s = typeof e.data === 'string' ? e.data : dec.decode(e.data);
      if (s.includes('"sent_at"')) window.__trustml_ws = performance.now(); }); } }; })();"""   # page.add_init_script: when the update reached the page


TIMER_JS = """() => {
  const root = document.querySelector('.trustml-explorer-view');
  const t = window.__trustml = {t0: null, dom: [], frame: [], kernel: [], to_kernel: [], from_kernel: [], in_page: [], versions: [], root};
  document.addEventListener('keydown', () => { t.t0 = performance.now(); }, true);
  new MutationObserver(() => {
    const now = performance.now(), sent = Number(root.dataset.sentAt) - performance.timeOrigin;  // same machine, same clock
    t.versions.push(Number(root.dataset.version));
    t.kernel.push(Number(root.dataset.computeMs));
    if (t.t0 === null) return;
    const t0 = t.t0; t.t0 = null;
    t.dom.push(now - t0);
    t.to_kernel.push(sent - t0);      // input -> kernel has computed and sends the data (incl. the compute)
    t.from_kernel.push(now - sent);   // kernel sent -> chart drawn (server relay, websocket, widget manager, SVG)
    if (window.__trustml_ws !== undefined) t.in_page.push(now - window.__trustml_ws);   // websocket message -> chart drawn
    requestAnimationFrame(() => t.frame.push(performance.now() - t0));
  }).observe(root, {attributes: true, attributeFilter: ['data-version']});
}"""


def slider_handle(page, label: str = SLIDER):
    """The keyboard-focusable handle of the lever slider whose description is `label`."""
    slider = page.locator(".widget-slider", has=page.get_by_text(label, exact=True))
    handle = slider.locator(".noUi-handle")
    handle.scroll_into_view_if_needed()
    return handle


def time_slider_moves(page, moves: int, label: str = SLIDER) -> dict:
    """Press arrow keys on a slider `moves` times, each after the chart showed the previous one; timings in ms.

    Returns {'dom': input event -> chart DOM updated, 'frame': -> start of the next animation frame,
    'kernel': kernel compute per update, 'versions': chart versions seen, 'values': slider values}.
    """
    handle = slider_handle(page, label)
    page.evaluate(TIMER_JS)
    handle.focus()
    values, up = [], True
    for _ in range(moves):
        now, lo, hi = (float(handle.get_attribute(a)) for a in ("aria-valuenow", "aria-valuemin", "aria-valuemax"))
        up = (up and now < hi) or now <= lo   # back and forth across the range: every press changes the value
        key = "ArrowRight" if up else "ArrowLeft"
        seen = page.evaluate("() => window.__trustml.dom.length")
        handle.press(key)
        page.wait_for_function("n => window.__trustml.dom.length > n && window.__trustml.frame.length > n", arg=seen, timeout=30_000)
        values.append(float(handle.get_attribute("aria-valuenow")))
    out = page.evaluate("() => { const t = window.__trustml; return {dom: t.dom, frame: t.frame, kernel: t.kernel, to_kernel: t.to_kernel, "
                        "from_kernel: t.from_kernel, in_page: t.in_page, versions: t.versions}; }")
    out["values"] = values
    return out


def _pct(xs, q):
    import numpy as np
    return float(np.percentile(np.asarray(xs, dtype=float), q))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--customers", type=int, default=3000)
    p.add_argument("--months", type=int, default=18)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--moves", type=int, default=200)
    p.add_argument("--nagle", action="store_true", help="plain JupyterLab: no TCP_NODELAY on kernel websockets (for comparison)")
    a = p.parse_args()
    if not chromium():
        sys.exit("Chromium not installed: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        explorer_notebook(root / "explorer.ipynb", n_customers=a.customers, n_months=a.months, seed=a.seed)
        with jupyter_lab(root, low_latency=not a.nagle) as url, browser() as b:
            page = b.new_page(viewport={"width": 1500, "height": 1100})
            page.add_init_script(WS_PROBE_JS)
            t0 = time.perf_counter()
            run_in_lab(page, url, "explorer.ipynb")
            ready = time.perf_counter() - t0
            page.wait_for_timeout(500)
            r = time_slider_moves(page, a.moves)
    dom, frame, kernel = r["dom"], r["frame"], r["kernel"][-a.moves:]
    how = "plain" if a.nagle else "TCP_NODELAY on kernel websockets, as trustml lab"
    print(f"{a.moves} slider moves in JupyterLab ({how}; Chromium headless), explorer on {a.customers:,} simulated customers x {a.months} months;"
          f" notebook ready in {ready:.0f} s")
    print(f"input -> chart DOM updated : p50 {_pct(dom, 50):.1f} ms  p99 {_pct(dom, 99):.1f} ms  max {max(dom):.1f} ms  (target p99 < 50 ms)")
    print(f"input -> next frame        : p50 {_pct(frame, 50):.1f} ms  p99 {_pct(frame, 99):.1f} ms")
    print(f"  of which input -> kernel sends (incl. compute): p50 {_pct(r['to_kernel'], 50):.1f} ms  p99 {_pct(r['to_kernel'], 99):.1f} ms")
    print(f"  of which kernel sends -> chart drawn         : p50 {_pct(r['from_kernel'], 50):.1f} ms  p99 {_pct(r['from_kernel'], 99):.1f} ms")
    if r["in_page"]:
        print(f"  of which websocket message -> chart drawn   : p50 {_pct(r['in_page'], 50):.1f} ms  p99 {_pct(r['in_page'], 99):.1f} ms")
    print(f"kernel compute per update  : p50 {_pct(kernel, 50):.1f} ms  p99 {_pct(kernel, 99):.1f} ms")
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} during the run")
    print(json.dumps({"benchmark": "whatif_latency", "nodelay": not a.nagle, "customers": a.customers, "months": a.months, "moves": a.moves,
                      "dom_p50_ms": round(_pct(dom, 50), 2), "dom_p99_ms": round(_pct(dom, 99), 2), "dom_max_ms": round(max(dom), 2),
                      "frame_p50_ms": round(_pct(frame, 50), 2), "frame_p99_ms": round(_pct(frame, 99), 2),
                      "kernel_p50_ms": round(_pct(kernel, 50), 2), "kernel_p99_ms": round(_pct(kernel, 99), 2),
                      "to_kernel_p50_ms": round(_pct(r["to_kernel"], 50), 2), "from_kernel_p50_ms": round(_pct(r["from_kernel"], 50), 2),
                      "target_p99_ms": 50, "met": _pct(dom, 99) < 50, "cpus": os.cpu_count(), "load_average": round(load, 2)}))


if __name__ == "__main__":
    main()
