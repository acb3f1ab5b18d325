"""`trustml report` and the notebook suite's own rules (execution itself is checked by nbval)."""

import ast
import json
import re

import nbformat
import pytest
from support import ROOT

from trustml.report import inject_parameters, run_report, suite

NOTEBOOKS = suite(ROOT / "notebooks")


def test_the_suite_has_its_fourteen_notebooks_in_order():
    names = [p.stem for p in NOTEBOOKS]
    assert len(names) == 14 and names == sorted(names) and [n[:2] for n in names] == [f"{i:02d}" for i in range(1, 15)]
    assert all(" " not in n and n[:2].isdigit() for n in names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_is_thin_parametrised_and_committed_executed(path):
    nb = nbformat.read(path, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    for node in ast.parse(params[0].source).body:  # literals only (numbers, negative ones too, strings, lists, None)
        assert isinstance(node, ast.Assign), ast.dump(node)
        ast.literal_eval(node.value)   # raises on anything but a literal (a name, a call, arithmetic)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs or c is params[0] for c in code if c.source.strip() and not c.source.strip().startswith("import")), \
        "committed with executed outputs"
    for c in code:  # logic lives in the package
        tree = ast.parse(c.source)
        assert not any(isinstance(n, ast.FunctionDef | ast.ClassDef | ast.Lambda) for n in ast.walk(tree)), c.source
        assert all(o.output_type != "error" for o in c.outputs), f"stored error in {path.name}"
        # a temporary folder made with mkdtemp outlives the kernel: one more left behind at every report
        assert "mkdtemp(" not in c.source and "mkstemp(" not in c.source, "use tempfile.TemporaryDirectory"
    # no raw ids anywhere in the file, widget state included: simulator ids, Telco customerIDs
    raw = re.search(r"\bC\d{7}\b|\b\d{4}-[A-Z]{5}\b", path.read_text())
    assert raw is None, f"raw customer id {raw.group()} stored in {path.name}"
    assert nb.metadata["trustml"]["runs_on"] in ("any", "simulated", "telco_customer_churn", "cdnow")
    assert any(c.cell_type == "markdown" and c.source.startswith("# ") for c in nb.cells)


def _tiny_suite(tmp_path, body="print(n_customers * 2)"):
    folder = tmp_path / "nbs"
    folder.mkdir()
    nb = nbformat.v4.new_notebook(metadata={"trustml": {"runs_on": "any"}})
    nb.cells = [nbformat.v4.new_markdown_cell("# Tiny"), nbformat.v4.new_code_cell("n_customers = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, folder / "01_tiny.ipynb")
    sim = nbformat.v4.new_notebook(metadata={"trustml": {"runs_on": "simulated"}})
    sim.cells = [nbformat.v4.new_markdown_cell("# Truth"), nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]})]
    nbformat.write(sim, folder / "02_truth.ipynb")
    return folder


def test_parameters_are_injected_after_the_parameters_cell(tmp_path):
    nb = nbformat.read(_tiny_suite(tmp_path) / "01_tiny.ipynb", as_version=4)
    out = inject_parameters(nb, {"n_customers": 21})
    assert out.cells[2].source.endswith("n_customers = 21") and "injected-parameters" in out.cells[2].metadata.tags
    assert len(nb.cells) == 3  # the original is not modified


def test_report_runs_the_suite_writes_html_index_and_model_card(tmp_path):
    folder = _tiny_suite(tmp_path)
    index = run_report(tmp_path / "out", n_customers=1500, n_months=15, notebooks=folder, progress=False)
    out = index.parent
    assert (out / "01_tiny.html").exists() and (out / "02_truth.html").exists()
    ran = nbformat.read(out / "01_tiny.ipynb", as_version=4)
    assert ran.cells[-1].outputs[0]["text"] == "3000\n"  # the injected value was used
    card = json.loads((out / "model_card.json").read_text())
    assert {"data", "features", "metrics", "calibration", "limitations", "privacy"} <= set(card)
    assert card["data"]["fingerprint"] and card["data"]["customers"] == 1500
    html = index.read_text()
    assert "01_tiny.html" in html and "Model card" in html and "Privacy" in html
    assert (out / "results" / "model" / "model.txt").exists()


def test_a_failing_notebook_is_reported_not_hidden(tmp_path):
    folder = _tiny_suite(tmp_path, body="raise RuntimeError('boom')")
    with pytest.raises(RuntimeError, match="01_tiny"):
        run_report(tmp_path / "out", n_customers=1500, n_months=15, notebooks=folder, progress=False)
    assert "failed" in (tmp_path / "out" / "index.html").read_text()


def test_notebooks_about_the_simulator_are_skipped_on_user_data(tmp_path):
    import polars as pl
    folder = _tiny_suite(tmp_path)
    data = tmp_path / "flat.csv"
    pl.DataFrame({"id": [f"c{i}" for i in range(200)], "y": ["Yes", "No"] * 100, "x": [i % 7 for i in range(200)]}).write_csv(data)
    mapping = tmp_path / "m.toml"
    mapping.write_text('kind = "flat"\n[columns]\nid = "id"\ntarget = "y"\npositive = ["Yes"]\n')
    index = run_report(tmp_path / "out", data=data, mapping=mapping, notebooks=folder, progress=False)
    html = index.read_text()
    assert "simulated data only" in html and not (index.parent / "02_truth.html").exists()
    card = json.loads((index.parent / "model_card.json").read_text())
    assert card["data"]["kind"] == "flat" and card["data"]["file"] == "flat.csv"


def test_the_suite_runs_on_a_users_event_log(tmp_path):
    """Every notebook meant for any data runs on an event log with no cancellations (churn by inactivity)."""
    import shutil

    import polars as pl

    from trustml.simulator import simulate
    w = simulate(800, 14, seed=3)
    kinds = ["usage", "ticket_opened", "ticket_resolved", "promise_broken", "promise_kept", "marketing_contact"]
    data = tmp_path / "log.csv"
    (w.events.filter(pl.col("event_type").is_in(kinds))
     .select(pl.col("customer_id").alias("account"), pl.col("timestamp").dt.strftime("%Y-%m-%d %H:%M:%S").alias("at"),
             pl.col("event_type").alias("what"), pl.col("value").alias("amount"))
     .write_csv(data))
    mapping = tmp_path / "log.yaml"
    mapping.write_text("kind: events\ncolumns: {id: account, timestamp: at, event_type: what, value: amount}\n"
                       "churn: {horizon: 60d, active_gap_days: 60}\n")
    folder = tmp_path / "nbs"
    folder.mkdir()
    for p in NOTEBOOKS:
        if nbformat.read(p, as_version=4).metadata["trustml"]["runs_on"] == "any":
            shutil.copy(p, folder / p.name)
    index = run_report(tmp_path / "out", data=data, mapping=mapping, notebooks=folder, progress=False)
    assert index.read_text().count("<td>ok</td>") == len(list(folder.glob("*.ipynb")))


def test_the_analysis_is_computed_once_and_every_notebook_reads_it(tmp_path):
    folder = _tiny_suite(tmp_path, body=("import trustml as tm\n"
                                         "s = tm.Study.load(n_customers=n_customers, n_months=15, seed=0, trials=trials, artifacts=artifacts)\n"
                                         "print('read, not recomputed:', '_fit' in s.__dict__, s.trained.metadata['trained_on']['rows'] > 0)"))
    index = run_report(tmp_path / "out", n_customers=1500, n_months=15, notebooks=folder, progress=False, trials=0)
    ran = nbformat.read(index.parent / "01_tiny.ipynb", as_version=4)
    assert ran.cells[-1].outputs[0]["text"] == "read, not recomputed: True True\n"
    assert not list(tmp_path.glob("trustml-report-*"))  # the private artifacts (raw ids) are gone


def test_the_same_seed_gives_the_same_report_bytes(tmp_path):
    folder = _tiny_suite(tmp_path)
    a = run_report(tmp_path / "a", n_customers=1500, n_months=15, notebooks=folder, progress=False, trials=2).parent
    b = run_report(tmp_path / "b", n_customers=1500, n_months=15, notebooks=folder, progress=False, trials=2).parent
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "index.html")  # the index holds timings
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != "index.html")
    differ = [str(f) for f in files if (a / f).read_bytes() != (b / f).read_bytes()]
    assert differ == []


def test_a_report_on_your_data_holds_no_raw_id_anywhere(tmp_path):
    """Every file of the shareable report folder (HTML, notebooks, tables, model) is searched for every raw id."""
    import polars as pl
    rng = __import__("numpy").random.default_rng(0)
    ids = [f"ACCT-{i:05d}-X" for i in range(400)]
    data = tmp_path / "flat.csv"
    pl.DataFrame({"account": ids, "left": rng.choice(["Yes", "No"], 400, p=[0.3, 0.7]), "tenure": rng.integers(1, 60, 400),
                  "plan": rng.choice(["a", "b"], 400)}).write_csv(data)
    mapping = tmp_path / "m.toml"
    mapping.write_text('kind = "flat"\n[columns]\nid = "account"\ntarget = "left"\npositive = ["Yes"]\n')
    folder = tmp_path / "nbs"
    folder.mkdir()
    for p in NOTEBOOKS[:1]:  # the quickstart: risks, reasons and the riskiest customers
        __import__("shutil").copy(p, folder / p.name)
    index = run_report(tmp_path / "out", data=data, mapping=mapping, notebooks=folder, progress=False, trials=0)
    found = []
    for f in index.parent.rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            found += [(f.name, i) for i in ids if i.encode() in blob]
    assert found == []
    assert pl.read_parquet(index.parent / "results" / "features.parquet")["customer_id"].str.starts_with("cust-").all()


def test_a_notebook_the_data_cannot_serve_is_skipped_with_the_reason(tmp_path):
    """Time to churn needs a tenure (flat) or snapshots over time: a flat table without one skips notebook 11, saying why."""
    import shutil

    import polars as pl
    rng = __import__("numpy").random.default_rng(1)
    data = tmp_path / "flat.csv"
    pl.DataFrame({"account": [f"A{i}" for i in range(600)], "left": rng.choice(["Yes", "No"], 600, p=[0.3, 0.7]),
                  "spend": rng.gamma(2.0, 30.0, 600), "plan": rng.choice(["a", "b"], 600)}).write_csv(data)
    mapping = tmp_path / "m.toml"
    mapping.write_text('kind = "flat"\n[columns]\nid = "account"\ntarget = "left"\npositive = ["Yes"]\n')
    folder = tmp_path / "nbs"
    folder.mkdir()
    shutil.copy(next(p for p in NOTEBOOKS if p.name.startswith("11_")), folder)
    index = run_report(tmp_path / "out", data=data, mapping=mapping, notebooks=folder, progress=False, trials=0)
    text = index.read_text()
    assert "<td>skipped</td>" in text and "needs survival" in text and "tenure" in text


def test_a_kernel_runs_notebooks_one_after_another_each_from_a_fresh_state(tmp_path):
    import asyncio

    from trustml.report import _Kernels

    def notebook(*cells):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
        return nb
    (tmp_path / "scratch").mkdir()
    dirty = ("import os, tempfile, matplotlib, matplotlib.pyplot as plt, polars as pl\nleaked = 1\npl.Config.set_tbl_rows(3)\n"
             f"kept = tempfile.TemporaryDirectory(dir={str(tmp_path / 'scratch')!r})\n"
             "matplotlib.rcParams['lines.linewidth'] = 9\n_ = plt.plot([1, 2])\nprint(os.getpid())")
    check = ("import os, matplotlib, matplotlib.pyplot as plt, polars as pl\n"
             "print(os.getpid(), 'leaked' in globals(), pl.DataFrame({'a': range(30)}).__repr__().count('\\n'),"
             " matplotlib.rcParams['lines.linewidth'])\n_ = plt.plot([1, 2])")
    runs = [notebook(dirty), notebook(check), notebook("raise RuntimeError('boom')"), notebook(check)]

    async def go():
        kernels, failed = _Kernels(1, tmp_path), []
        try:
            for nb in runs:
                try:
                    await kernels.run(nb, 120)
                except Exception as e:  # noqa: BLE001
                    failed.append(type(e).__name__)
        finally:
            await kernels.close()
        return failed, kernels.alive
    failed, alive = asyncio.run(go())
    assert failed == ["CellExecutionError"] and alive == []
    fresh = nbformat.v4.new_notebook()
    fresh.cells = [nbformat.v4.new_code_cell(check)]
    from trustml.report import execute
    execute(fresh, tmp_path, 120)
    pid0 = runs[0].cells[0].outputs[0]["text"].split()[0]
    second, fourth, alone = (nb.cells[0].outputs[0]["text"].split() for nb in (runs[1], runs[3], fresh))
    assert second[0] == pid0 != fourth[0]            # the kernel was reused, and replaced after the failure
    assert second[1:] == fourth[1:] == alone[1:]      # as in a new kernel: no names left, default display settings
    assert not list((tmp_path / "scratch").iterdir())  # a notebook's temporary folder goes with its names
    assert alone[1] == "False" and alone[3] != "9"
    for nb in (runs[1], runs[3]):
        assert nb.cells[0].execution_count == 1 and any("image/png" in o.get("data", {}) for o in nb.cells[0].outputs)


def test_kernels_side_by_side_get_one_blas_thread_each_and_a_single_kernel_all(tmp_path):
    import asyncio

    from trustml.report import _Kernels
    probe = "from threadpoolctl import threadpool_info\nprint(max(p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'))"

    async def threads(jobs: int) -> int:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(probe)]
        kernels = _Kernels(jobs, tmp_path)
        try:
            await kernels.run(nb, 120)
        finally:
            await kernels.close()
        return int(nb.cells[0].outputs[0]["text"])
    from threadpoolctl import threadpool_info
    here = max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
    assert asyncio.run(threads(2)) == 1
    assert asyncio.run(threads(1)) == here

