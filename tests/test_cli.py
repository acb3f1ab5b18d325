import subprocess
import sys

import polars as pl
import pytest

from trustml.cli import build_parser, main

COMMANDS = ["simulate", "features", "train", "evaluate", "explain", "playbook", "report", "lab"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: trustml " + command in capsys.readouterr().out


def test_the_pipeline_runs_from_the_command_line(tmp_path, capsys):
    w, f, m, e = tmp_path / "w", tmp_path / "f.parquet", tmp_path / "m", tmp_path / "e.parquet"
    main(["simulate", "--customers", "1500", "--months", "15", "--out", str(w), "--quiet"])
    main(["features", "--data", str(w), "--out", str(f)])
    main(["train", "--features", str(f), "--out", str(m)])
    main(["evaluate", "--features", str(f), "--model", str(m), "--out", str(tmp_path / "metrics.csv")])
    main(["explain", "--features", str(f), "--model", str(m), "--out", str(e), "--quiet"])
    main(["playbook", "--features", str(f), "--model", str(m), "--out", str(tmp_path / "playbook.csv"), "--top", "7"])
    out = capsys.readouterr().out
    assert "lightgbm (calibrated)" in out and "Promises kept" in out
    ex = pl.read_parquet(e)
    assert ex["customer"].str.starts_with("cust-").all() and "customer_id" not in ex.columns
    assert pl.read_csv(tmp_path / "metrics.csv").height == 3
    playbook = pl.read_csv(tmp_path / "playbook.csv")
    assert playbook.height == 7 and playbook["customer"].str.starts_with("cust-").all()
    assert playbook["expected_value"].is_sorted(descending=True)


def test_bad_input_is_a_clear_message_not_a_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "trustml.cli", "features", "--data", str(tmp_path / "nowhere"), "--out",
                        str(tmp_path / "f.parquet")], capture_output=True, text=True)
    assert r.returncode != 0
    assert "trustml features:" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "f.parquet").exists()


def test_parser_knows_all_commands():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(COMMANDS)


def test_features_from_your_own_file_through_a_mapping(tmp_path, capsys):
    data = tmp_path / "flat.csv"
    pl.DataFrame({"id": [f"c{i}" for i in range(300)], "left": ["yes", "no", "no"] * 100,
                  "plan": ["a", "b", "c"] * 100, "spend": [float(i % 17) for i in range(300)]}).write_csv(data)
    mapping = tmp_path / "m.yaml"
    mapping.write_text("kind: flat\ncolumns: {id: id, target: left, positive: [yes], negative: [no]}\npillars: {promises: [plan]}\n")
    f, m = tmp_path / "f.parquet", tmp_path / "model"
    main(["features", "--data", str(data), "--mapping", str(mapping), "--out", str(f)])
    main(["train", "--features", str(f), "--out", str(m)])
    main(["evaluate", "--features", str(f), "--model", str(m)])
    out = capsys.readouterr().out
    assert "wrote 300 rows x 2 features" in out and "lightgbm (calibrated)" in out
