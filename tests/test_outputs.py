"""Outputs appear whole or not at all: staging, refusal of a mixed --out, and the CLI's promise for user mistakes."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from trustml.cli import main
from trustml.contract import ContractError
from trustml.outputs import check_target, private_folder, staged


def test_a_failure_inside_leaves_nothing(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), staged(target, kind="dir") as tmp:
        (tmp / "half.csv").write_text("a,b\n")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_a_file_target_moves_with_its_sidecars(tmp_path):
    with staged(tmp_path / "f.parquet", kind="file") as tmp:
        tmp.write_text("x")
        tmp.with_name(tmp.name + ".json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.parquet", "f.parquet.json"]


def test_an_existing_target_is_refused_or_replaced_whole(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.html").write_text("old")
    with pytest.raises(ContractError, match="--overwrite"), staged(target, kind="dir"):
        pass
    with staged(target, kind="dir", overwrite=True) as tmp:
        (tmp / "new.html").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.html"]  # replaced whole, never mixed
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("make, kind, message", [
    (lambda p: p.write_text("x"), "dir", "is an existing file"),
    (lambda p: p.mkdir(), "file", "is an existing folder"),
])
def test_a_target_of_the_wrong_kind_is_refused(tmp_path, make, kind, message):
    make(tmp_path / "t")
    with pytest.raises(ContractError, match=message):
        check_target(tmp_path / "t", kind=kind, overwrite=True)


def test_a_read_only_folder_is_refused(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:  # root may write anywhere: ask the same question the way a user's account would answer it
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != ro)
    with pytest.raises(ContractError, match="no write permission"):
        check_target(ro / "out", kind="dir")


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "trustml.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("case", ["out is a file", "out under a file", "mapping is a folder", "no such data", "features not a table"])
def test_user_mistakes_are_one_message_exit_2_and_nothing_written(tmp_path, case):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    data = tmp_path / "d.csv"
    data.write_text("id,left,x\n" + "".join(f"c{i},{'Yes' if i % 3 == 0 else 'No'},{i % 7}\n" for i in range(60)))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    args = {
        "out is a file": ["simulate", "--customers", "50", "--months", "3", "--out", str(tmp_path / "afile")],
        "out under a file": ["features", "--data", str(data), "--mapping", "telco", "--out", str(tmp_path / "afile" / "f.parquet")],
        "mapping is a folder": ["features", "--data", str(data), "--mapping", str(tmp_path / "adir"), "--out", str(tmp_path / "f.parquet")],
        "no such data": ["features", "--data", str(tmp_path / "nowhere.csv"), "--mapping", "telco", "--out", str(tmp_path / "f.parquet")],
        "features not a table": ["train", "--features", str(data), "--out", str(tmp_path / "m")],
    }[case]
    r = _cli(*args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.startswith(f"trustml {args[0]}:")
    assert len(r.stderr.strip().splitlines()) <= 3
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # inputs byte-identical, nothing new written
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "adir"])


def test_a_tampered_model_stops_the_playbook_before_it_writes(tmp_path):
    w, f, m = tmp_path / "w", tmp_path / "f.parquet", tmp_path / "m"
    main(["simulate", "--customers", "600", "--months", "12", "--out", str(w), "--quiet"])
    main(["features", "--data", str(w), "--out", str(f)])
    main(["train", "--features", str(f), "--out", str(m), "--trials", "0", "--quiet"])
    text = (m / "model.txt").read_text()
    (m / "model.txt").write_text(text[: len(text) // 2])
    r = _cli("playbook", "--features", str(f), "--model", str(m), "--out", str(tmp_path / "p.csv"))
    assert r.returncode == 2 and "model.txt" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_report_leaves_nothing_that_looks_like_a_result(tmp_path, sig):
    out = tmp_path / "report"
    p = subprocess.Popen([sys.executable, "-m", "trustml.cli", "report", "--customers", "800", "--months", "12", "--trials", "0",
                          "--out", str(out), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    # wait until the first notebook has been written into the staging folder: the run is well under way
    while time.time() < deadline and not any(tmp_path.glob(".report.partial-*/01_*.html")) and p.poll() is None:
        time.sleep(0.2)
    assert p.poll() is None, p.communicate()
    private = list(Path(tempfile.gettempdir()).glob(f"trustml-report-{p.pid}-*"))   # its analysis (raw ids), while it runs
    assert private
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert not out.exists()
    if sig == signal.SIGINT:
        assert p.returncode == 130 and "interrupted; nothing was written" in err and "Traceback" not in err
        assert list(tmp_path.iterdir()) == []
    else:  # a kill cannot clean up: what is left is a hidden staging folder, removed by the next run
        assert all(q.name.startswith(".report.partial-") for q in tmp_path.iterdir())
        _cli("simulate", "--customers", "50", "--months", "3", "--out", str(out))
        assert not any(tmp_path.glob(".report.partial-*"))
        # and the report's private analysis folder, removed by the next report's first step (or another's already)
        shutil.rmtree(private_folder("trustml-report-"))
    assert not any(q.exists() for q in private)


def test_the_cli_module_reports_the_staging_target_not_the_staging_path(tmp_path, capsys):
    main(["simulate", "--customers", "60", "--months", "3", "--out", str(tmp_path / "w"), "--quiet"])
    assert f"to {tmp_path / 'w'}" in capsys.readouterr().out
    assert Path(tmp_path / "w" / "world.json").exists()


@pytest.mark.parametrize("case", ["values near 1e308", "every column constant", "two rows", "reversed actionable range"])
def test_tables_that_cannot_be_modelled_stop_the_report_before_it_writes(tmp_path, case):
    rows = range(120)
    body = {
        "values near 1e308": [f"c{i},{'Yes' if i % 3 == 0 else 'No'},{1e308 if i % 2 else -1e307},{i % 5}" for i in rows],
        "every column constant": [f"c{i},{'Yes' if i % 3 == 0 else 'No'},1,a" for i in rows],
        "two rows": ["c1,Yes,1,2", "c2,No,2,3"],
        "reversed actionable range": [f"c{i},{'Yes' if i % 3 == 0 else 'No'},{i % 9},{i % 5}" for i in rows],
    }[case]
    data = tmp_path / "d.csv"
    data.write_text("id,left,x,y\n" + "\n".join(body) + "\n")
    mapping = tmp_path / "m.toml"
    extra = "[actionable]\ny = {min = 4, max = 0}\n" if case == "reversed actionable range" else ""
    mapping.write_text('kind = "flat"\n[columns]\nid = "id"\ntarget = "left"\npositive = ["Yes"]\nnegative = ["No"]\n' + extra)
    r = _cli("report", "--data", str(data), "--mapping", str(mapping), "--out", str(tmp_path / "out"), "--trials", "0", "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("trustml report: 1 problem in the input:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "m.toml"]


@pytest.mark.parametrize("corrupt, column", [
    (lambda ev: ev.with_columns(event_type=__import__("polars").lit("teleport")), "event_type"),
    (lambda ev: ev.with_columns(customer_id=__import__("polars").lit("nobody")), "customer_id"),
    (lambda ev: ev.with_columns(timestamp=__import__("polars").lit(None, dtype=ev.schema["timestamp"])), "timestamp"),
])
def test_a_simulated_world_folder_is_held_to_the_data_contract(tmp_path, corrupt, column):
    """`trustml features --data WORLD_DIR` once skipped the contract: unknown types, customers, null timestamps."""
    import polars as pl
    w = tmp_path / "w"
    main(["simulate", "--customers", "80", "--months", "4", "--out", str(w), "--quiet"])
    part = next((w / "events").glob("*.parquet"))
    ev = pl.read_parquet(part)
    bad = pl.concat([ev, corrupt(ev.head(3)).cast(ev.schema, strict=False)], how="vertical_relaxed")
    bad.write_parquet(part)
    r = _cli("features", "--data", str(w), "--out", str(tmp_path / "f.parquet"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and f"column '{column}'" in r.stderr, r.stderr
    assert not (tmp_path / "f.parquet").exists()
