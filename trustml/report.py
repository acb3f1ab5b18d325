"""`trustml report`: execute the notebook suite on the chosen data and write HTML reports.

Each notebook has one cell tagged ``parameters`` (literals only). The report injects the
chosen values in a cell right after it (as papermill does), executes the notebook with
nbclient, and writes ``NN_name.ipynb`` and ``NN_name.html`` per notebook, an ``index.html``,
the model card (``model_card.json`` and a section of the index) and the study's tables.

A notebook's metadata says what it needs (``trustml.needs``: e.g. ``["survival"]``; skipped with the reason
where the data cannot give it) and what data it tells a story about (``trustml.runs_on``): ``any``
(simulated or the user's data), ``simulated`` (needs the simulator's truth) or a path under
``../shared/data`` (a notebook about one public dataset, skipped with the reason where it is absent). A notebook that
computes more than it reads from the analysis says what (``trustml.computes``, e.g. its own study of a public
dataset): those start first, so that the long ones do not end the run alone on one kernel (rows keep the suite's order).
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from pathlib import Path

import nbformat

__all__ = ["suite_dir", "suite", "inject_parameters", "execute", "run_report", "next_steps"]


def suite_dir() -> Path:
    """The repository's `notebooks/` folder (trustml is installed from a clone: `pip install -e .`)."""
    d = Path(__file__).resolve().parents[1] / "notebooks"
    if not any(d.glob("[0-9][0-9]_*.ipynb")):
        raise FileNotFoundError(f"no notebook suite at {d}: install trustml from a clone (pip install -e .) "
                                "or pass --notebooks DIR")
    return d


def suite(folder: Path | None = None) -> list[Path]:
    """The numbered notebooks, in order."""
    return sorted((folder or suite_dir()).glob("[0-9][0-9]_*.ipynb"))


def inject_parameters(nb, params: dict):
    """A copy of `nb` with a cell setting `params` right after the `parameters` cell."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    idx = next((i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if idx is None:
        raise ValueError("notebook has no cell tagged 'parameters'")
    src = "# Parameters injected by trustml report\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(src, metadata={"tags": ["injected-parameters"]})
    cell.id = "injected-parameters"  # a fixed id: the same seed gives the same notebook bytes
    nb.cells.insert(idx + 1, cell)
    return nb


def _client(nb, cwd: Path, timeout: int, km=None):
    from nbclient import NotebookClient
    return NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}},
                          store_widget_state=True, record_timing=False, km=km)


# Run in a kernel between two notebooks: the next one starts from an empty namespace, no figures, the display
# settings of a new kernel and execution count 1, as in a fresh kernel; only the imported modules stay (the slow
# part of a start: about 4 s of CPU for `import trustml`).
_REMEMBER = """\
import matplotlib.pyplot as _p
_p.close(_p.figure())   # loads the notebook backend, which sets its own parameters
get_ipython()._trustml_rc = {k: v for k, v in _p.rcParams.items() if k not in ("backend", "interactive")}
del _p
"""
_FRESH = """\
get_ipython().run_line_magic("reset", "-f")
import matplotlib as _m, matplotlib.pyplot as _p, polars as _q
_p.close("all")
_m.rcParams.update(get_ipython()._trustml_rc)
_q.Config.restore_defaults()
del _m, _p, _q
get_ipython().execution_count = 1
"""


class _Kernels:
    """`jobs` kernels that each run notebooks one after another, reset to a fresh state between two.

    A kernel where a notebook failed (an error, a timeout, a death) is shut down and the next notebook gets a
    new one, so nothing of a failed run leaks. `close` shuts every kernel down.
    """

    def __init__(self, jobs: int, cwd: Path):
        import asyncio
        import os

        from trustml.distributed import ONE_THREAD
        self.cwd, self.free, self.alive = cwd, asyncio.Queue(), []
        # kernels side by side: one BLAS / OpenMP thread each (each library's pool of every core, per kernel,
        # oversubscribes the cores: a notebook ran about twice as long beside another)
        self.env = {**os.environ, **ONE_THREAD} if jobs > 1 else None
        for _ in range(max(1, jobs)):
            self.free.put_nowait(None)   # None: start a kernel on first use

    async def run(self, nb, timeout: int = 900) -> float:
        """Execute `nb` in a free kernel; returns the seconds it took (from when a kernel was free)."""
        import subprocess
        km = await self.free.get()
        t0 = time.perf_counter()
        client = _client(nb, self.cwd, timeout, km)
        try:
            if km is None:
                client.km = km = client.create_kernel_manager()
                client.owns_km = False   # the kernel outlives this notebook
                self.alive.append(km)
                await client.async_start_new_kernel(stderr=subprocess.DEVNULL, **({"env": self.env} if self.env else {}))
                await client.async_start_new_kernel_client()
                await self._silent(client, _REMEMBER)
            await client.async_execute(stderr=subprocess.DEVNULL)
            await self._silent(client, _FRESH)
        except BaseException:
            await self._shutdown(km)
            km = None
            raise
        finally:
            if client.kc is not None:
                client.kc.stop_channels()
            self.free.put_nowait(km)
        return time.perf_counter() - t0

    @staticmethod
    async def _silent(client, code: str):
        reply = await client.async_wait_for_reply(client.kc.execute(code, silent=True, store_history=False))
        if reply is None or reply["content"].get("status") != "ok":
            raise RuntimeError(f"resetting the kernel between notebooks failed: {reply and reply['content'].get('evalue')}")

    async def _shutdown(self, km):
        if km is None or km not in self.alive:
            return
        self.alive.remove(km)
        try:
            if await km.is_alive():
                await km.shutdown_kernel(now=True)
        except Exception:  # noqa: BLE001  (already gone)
            pass

    async def close(self):
        for km in list(self.alive):
            await self._shutdown(km)


def execute(nb, cwd: Path, timeout: int = 900):
    """Run every cell (kernel python3) in `cwd`; widget state is stored so HTML shows the widgets."""
    import subprocess
    # the kernel's own stderr is noise in a report (transport notices, tracebacks of a kernel stopped mid-start);
    # what a cell prints, errors included, is in the notebook
    _client(nb, cwd, timeout).execute(stderr=subprocess.DEVNULL)
    return nb


def next_steps(study, folder: Path | None = None) -> str:
    """What to do next, as Markdown, naming only notebooks that run on this study's data (the quickstart's ending).

    >>> class S: is_simulated = False
    >>> "ground truth" in next_steps(S()) and "notebook 10" not in next_steps(S())
    True
    """
    simulated = study.is_simulated

    def runs(prefix: str) -> bool:
        path = next(iter(sorted((folder or suite_dir()).glob(f"{prefix}_*.ipynb"))), None)
        if path is None:
            return False
        runs_on = nbformat.read(path, as_version=4).metadata.get("trustml", {}).get("runs_on", "any")
        return runs_on == "any" or (simulated and runs_on == "simulated")
    lines = ["* Read the pillar chart first: it says where trust is being lost across the base."]
    lines.append("* Use reason codes per customer, then "
                 + ("the what-if explorer (notebook 06) to see which change would bring a customer's risk down, "
                    if runs("06") else "")
                 + "and the playbook (`trustml playbook`) to rank actions by expected value.")
    if runs("10"):
        lines.append("* Notebook 10 checks these explanations against the simulator's ground truth before you rely on them.")
    else:
        lines.append("* Your data has no ground truth to check the explanations against: notebook 05 shows how each signal "
                     "moves risk, and the summary lists any declared direction the model contradicts.")
    return "\n".join(lines)


def _title(nb) -> str:
    for c in nb.cells:
        if c.cell_type == "markdown":
            for line in c.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("# ").strip()
    return "(untitled)"


def _plan(nb, data, mapping, sizes: tuple[int, int, int], shared: Path) -> tuple[dict | None, str]:
    """Parameters to run `nb` with, or None and why it is skipped."""
    runs_on = nb.metadata.get("trustml", {}).get("runs_on", "any")
    if runs_on == "any" and data is not None:
        m = str(Path(mapping).resolve()) if Path(mapping).exists() else str(mapping)  # a path, or a shipped name
        return {"data": str(Path(data).resolve()), "mapping": m}, ""
    if runs_on in ("any", "simulated"):
        if data is None:
            return {"n_customers": sizes[0], "n_months": sizes[1], "seed": sizes[2]}, ""
        return None, "made for the simulated trust world (its events and ground truth): runs on simulated data only"
    if data is not None:
        return None, f"a notebook about the public dataset {runs_on}; not part of a report on your data"
    if not (shared / runs_on).exists():
        return None, f"{shared / runs_on} not found (the shared public datasets are beside the repo in CI and on dev machines)"
    return {}, ""


def run_report(out: str | Path, *, data: str | Path | None = None, mapping: str | Path | None = None,
               n_customers: int = 3000, n_months: int = 18, seed: int = 0, notebooks: Path | None = None,
               progress: bool = True, trials: int | None = None, jobs: int = 2, cluster=None) -> Path:
    """Execute the suite into `out` and write `index.html`; returns its path. Failures are listed, not hidden.

    The analysis is computed once (`Study.save` into a private temporary folder, deleted afterwards: it holds
    raw ids) and every notebook reads it through its `artifacts` parameter. Ctrl-C (or SIGTERM) stops the run
    after shutting the running kernels down; the caller (`trustml report`) then leaves nothing behind.
    jobs: notebooks executed at the same time (one kernel each). cluster: compute the analysis's features and
    explanations on Dask (see `Study.load`); the notebooks read them.
    """
    import asyncio
    import shutil
    import signal

    from trustml.outputs import private_folder
    from trustml.study import Study, _key
    folder = Path(notebooks) if notebooks else suite_dir()
    paths = suite(folder)
    if not paths:
        raise FileNotFoundError(f"no numbered notebooks (NN_name.ipynb) in {folder}")
    out = Path(out)
    study = Study.load(data, mapping, n_customers=n_customers, n_months=n_months, seed=seed, trials=trials,
                       cluster=cluster)  # bad data fails here
    cache = private_folder("trustml-report-")   # a killed run's folder is removed by the next report
    stop = {"signal": None}

    def interrupt(signum, frame):  # noqa: ARG001
        stop["signal"] = signum
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        study.compute(progress=progress, jobs=jobs)
        study.save(cache, key=_key(data, mapping, n_customers, n_months, seed, study.trials))
        out.mkdir(parents=True, exist_ok=True)
        study.write(out / "results")
        card = study.model_card()
        (out / "model_card.json").write_text(json.dumps(card, indent=2, default=str))
        from trustml.tracking import log_model
        tracked = log_model(study.trained, out / "results" / "model", card=card)  # MLflow, when installed and a URI is set
        if progress:
            print(f"tracking: {tracked.note}")
        computed = {"causal_levers": None} if "causal_effects" in study.__dict__ else {}   # every lever, read
        sizes, unable, source = (n_customers, n_months, seed, study.trials), _unable(study), study.source
        del study   # the notebooks read the artifacts: this process lets the analysis go (its memory, at scale)
        import gc
        gc.collect()
        rows = _run_notebooks(paths, folder, out, data, mapping, sizes, str(cache), progress, stop, jobs, computed, unable)
    except BaseException as e:
        # asyncio (inside nbclient) may turn the interrupt into a CancelledError: either way, the run was stopped
        if stop["signal"] is not None or isinstance(e, KeyboardInterrupt | asyncio.CancelledError):
            raise KeyboardInterrupt from None
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(cache, ignore_errors=True)
    index = out / "index.html"
    index.write_text(_index_html(rows, card, source), encoding="utf-8")
    failed = [r["name"] for r in rows if r["status"] == "failed"]
    if failed:
        reasons = "; ".join(f"{r['name']}: {r['why']}" for r in rows if r["status"] == "failed")
        raise RuntimeError(f"{len(failed)} notebook(s) failed: {reasons}")
    return index


def _unable(study) -> dict[str, str]:
    """What this study cannot give a notebook (a notebook's metadata ``trustml.needs`` lists what it needs), and why."""
    out = {"survival": study.survival_problem} if study.survival_problem else {}
    if not study.has_events:
        out["events"] = "this data is a flat table, not an event log"
    return out


def _parameter_names(nb) -> set[str]:
    import ast
    cell = next((c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    return set() if cell is None else {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
                                       for t in node.targets if isinstance(t, ast.Name)}


def _run_notebooks(paths, folder, out, data, mapping, sizes, cache, progress, stop, jobs: int = 2,
                   computed: dict | None = None, unable: dict | None = None) -> list[dict]:
    """Execute the planned notebooks, `jobs` kernels at a time (each notebook is independent: it reads the shared
    artifacts), and write each one's .ipynb and HTML as it finishes; rows keep the suite's order."""
    import asyncio

    shared = (Path(__file__).resolve().parents[2] / "shared" / "data")
    rows, runs = [], []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        params, why = _plan(nb, data, mapping, sizes[:3], shared)
        missing = [need for need in nb.metadata.get("trustml", {}).get("needs", []) if need in (unable or {})]
        if params is not None and missing:   # e.g. time to churn on a flat table with no tenure column
            params, why = None, "; ".join(f"needs {need}: {unable[need]}" for need in missing)
        rows.append({"name": path.stem, "title": _title(nb), "status": "skipped", "why": why, "seconds": 0.0})
        if params is not None:
            # parameters that say "read it from the artifacts" where the analysis computed it (e.g. causal_levers=None)
            more = {k: v for k, v in (computed or {}).items() if k in _parameter_names(nb)}
            runs.append((len(rows) - 1, path, inject_parameters(nb, {**params, "trials": sizes[3], "artifacts": cache, **more})))
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(runs), desc="report", unit="notebook")

    async def one(kernels, i, path, run):
        t0 = time.perf_counter()
        try:
            rows[i]["seconds"] = round(await kernels.run(run, 900), 1)
            rows[i]["status"] = "ok"
        except Exception as e:  # keep going: one broken notebook must not hide the others
            if stop["signal"] is not None:
                raise KeyboardInterrupt from None
            rows[i].update(status="failed", why=str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__,
                           seconds=round(time.perf_counter() - t0, 1))
        _write_notebook(run, path, out, cache)
        if bar is not None:
            bar.set_postfix_str(path.stem)
            bar.update()

    async def every():
        kernels = _Kernels(jobs, folder)
        try:
            await asyncio.gather(*(one(kernels, i, path, run) for i, path, run in _longest_first(runs)))
        finally:
            await kernels.close()

    def quiet(loop, context):
        # a run stopped by Ctrl-C cancels kernels mid-start: the tasks it leaves behind are not errors of the report
        if stop["signal"] is None:
            loop.default_exception_handler(context)

    try:
        # on an interrupt the runner cancels every task, so each kernel is shut down (see `_ReportLoop` for the signals)
        with asyncio.Runner(loop_factory=_ReportLoop) as runner:
            runner.get_loop().set_exception_handler(quiet)
            runner.run(every())
    finally:
        if bar is not None:
            bar.close()
    if stop["signal"] is not None:
        raise KeyboardInterrupt
    return rows


def _longest_first(runs: list) -> list:
    """`runs` (row, path, notebook) with the notebooks that say they compute (``trustml.computes``) first, each
    group in the suite's order: kernels take notebooks in this order as they come free.

    >>> import nbformat
    >>> nb = lambda computes=None: nbformat.v4.new_notebook(metadata={"trustml": {"computes": computes} if computes else {}})
    >>> [i for i, _, _ in _longest_first([(0, "a", nb()), (1, "b", nb("its own study")), (2, "c", nb())])]
    [1, 0, 2]
    """
    return sorted(runs, key=lambda r: not r[2].metadata.get("trustml", {}).get("computes"))


class _ReportLoop(asyncio.SelectorEventLoop):
    """An event loop that refuses signal handlers: nbclient then skips its own per notebook (it catches this
    RuntimeError, and would otherwise restore Python's default handler after each notebook), so the report's
    handler, installed for the whole run, sees every Ctrl-C and SIGTERM."""

    def add_signal_handler(self, sig, callback, *args):
        raise RuntimeError("trustml report handles signals itself")

    def remove_signal_handler(self, sig):
        raise RuntimeError("trustml report handles signals itself")


def _write_notebook(run, path: Path, out: Path, cache: str) -> None:
    from nbconvert import HTMLExporter

    from trustml.explorer import freeze_explorers
    # the private folder is gone after the report: say so instead of its (random) path, so the same seed
    # gives the same bytes; re-run on its own, the notebook computes what it needs
    for cell in run.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.source = cell.source.replace(repr(cache), repr("deleted after the report (it held raw ids)"))
    nbformat.write(run, out / path.name)
    # the HTML shows each explorer as it was (static SVG, no script, no network); the .ipynb keeps the live widget
    html_text = HTMLExporter(template_name="lab").from_notebook_node(freeze_explorers(run))[0]
    (out / f"{path.stem}.html").write_text(html_text, encoding="utf-8")


def _index_html(rows: list[dict], card: dict, source: dict) -> str:
    e = html.escape

    def link(r):
        return e(r["title"]) if r["status"] == "skipped" else f'<a href="{e(r["name"])}.html">{e(r["title"])}</a>'
    items = "".join(f"<tr><td>{link(r)}</td><td>{e(r['status'])}</td><td>{r['seconds']:.1f} s</td><td>{e(r['why'])}</td></tr>"
                    for r in rows)
    metrics = "".join(f"<tr><td>{e(m['model'])}</td><td>{m['roc_auc']}</td><td>{m['pr_auc']}</td><td>{m['top_decile_lift']}</td></tr>"
                      for m in card["metrics"])
    pillars = "".join(f"<tr><td>{e(p['label'])}</td><td>{p['mean_abs_shap']:.3f}</td><td>{p['share']:.1%}</td></tr>"
                      for p in card["pillar_importance"])
    lim = "".join(f"<li>{e(x)}</li>" for x in card["limitations"])
    warn = "".join(f"<li>{e(x)}</li>" for x in card["warnings"])
    assumptions = "".join(f"<li>{e(x)}</li>" for x in card["economics"]["assumptions"])
    data = "".join(f"<tr><td>{e(str(k))}</td><td>{e(str(v))}</td></tr>" for k, v in card["data"].items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>trustml report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:.5em 0 1.5em}}td,th{{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}}</style></head>
<body><h1>trustml report: {e(str(source.get('name')))}</h1>
<h2>Notebooks</h2><table><tr><th>notebook</th><th>status</th><th>time</th><th>note</th></tr>{items}</table>
<h2>Model card</h2><p>{e(card['model'])}</p>
<h3>Data</h3><table>{data}</table>
<h3>Test metrics</h3><table><tr><th>model</th><th>ROC-AUC</th><th>PR-AUC</th><th>top-decile lift</th></tr>{metrics}</table>
<h3>What drives churn, by trust pillar</h3><table><tr><th>pillar</th><th>mean |SHAP| (log-odds)</th><th>share</th></tr>{pillars}</table>
<h3>Economics assumptions</h3><ul>{assumptions}</ul>
<h3>Warnings</h3><ul>{warn or "<li>none</li>"}</ul>
<h3>Limitations</h3><ul>{lim}</ul>
<h3>Privacy</h3><p>{e(card['privacy'])}</p>
<p>Full card: <a href="model_card.json">model_card.json</a>; tables and model: <code>results/</code>.</p></body></html>"""
