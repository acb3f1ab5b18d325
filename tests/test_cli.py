import subprocess
import sys

import polars as pl
import pytest

from trustml.cli import build_parser, main

COMMANDS = ["simulate", "features", "train", "evaluate", "explain", "playbook", "report", "lab", "mapping", "score", "survival"]


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
    main(["train", "--features", str(f), "--out", str(m), "--trials", "3"])
    main(["evaluate", "--features", str(f), "--model", str(m), "--out", str(tmp_path / "metrics.csv")])
    main(["explain", "--features", str(f), "--model", str(m), "--out", str(e), "--quiet"])
    main(["playbook", "--features", str(f), "--model", str(m), "--out", str(tmp_path / "playbook.csv"), "--top", "7"])
    out = capsys.readouterr().out
    assert "lightgbm (calibrated)" in out and "Promises kept" in out
    ex = pl.read_parquet(e)
    assert ex["customer"].str.starts_with("cust-").all() and "customer_id" not in ex.columns
    assert pl.read_csv(tmp_path / "metrics.csv").height == 5  # the model, logistic, tenure, tickets + tenure, recency/frequency
    playbook = pl.read_csv(tmp_path / "playbook.csv")
    assert playbook.height == 7 and playbook["customer"].str.starts_with("cust-").all()
    assert playbook["expected_value"].is_sorted(descending=True)


def test_bad_input_is_a_clear_message_not_a_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "trustml.cli", "features", "--data", str(tmp_path / "nowhere"), "--out",
                        str(tmp_path / "f.parquet")], capture_output=True, text=True)
    assert r.returncode == 2
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
    main(["train", "--features", str(f), "--out", str(m), "--trials", "3"])
    main(["evaluate", "--features", str(f), "--model", str(m)])
    out = capsys.readouterr().out
    assert "wrote 300 rows x 2 features" in out and "lightgbm (calibrated)" in out


def test_evaluate_scores_every_row_of_a_separate_test_file(tmp_path, capsys):
    """A flat table split into a training file and a test file: evaluate scores all of the test file, not 20% of it."""
    rng = __import__("numpy").random.default_rng(0)
    n = 900
    y = rng.integers(0, 2, n)
    df = pl.DataFrame({"id": [f"c{i}" for i in range(n)], "left": ["yes" if v else "no" for v in y],
                       "spend": rng.normal(size=n) + y, "plan": rng.choice(["a", "b"], n)})
    mapping = tmp_path / "m.toml"
    mapping.write_text('kind = "flat"\n[columns]\nid = "id"\ntarget = "left"\npositive = ["yes"]\nnegative = ["no"]\n')
    df.head(600).write_csv(tmp_path / "train.csv")
    df.tail(300).write_csv(tmp_path / "test.csv")
    for name in ("train", "test"):
        main(["features", "--data", str(tmp_path / f"{name}.csv"), "--mapping", str(mapping), "--out", str(tmp_path / f"{name}.parquet")])
    main(["train", "--features", str(tmp_path / "train.parquet"), "--out", str(tmp_path / "m"), "--trials", "0", "--quiet"])
    main(["evaluate", "--features", str(tmp_path / "test.parquet"), "--model", str(tmp_path / "m"), "--out", str(tmp_path / "e.csv")])
    assert "scoring all 300 labelled rows" in capsys.readouterr().out
    assert pl.read_csv(tmp_path / "e.csv")["n"].to_list() == [300]
