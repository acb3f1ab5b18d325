"""A held-out corpus of malformed and unusual inputs, by class, run through the CLI as a user would.

Each case writes its own files in tmp_path and runs `trustml features --data F --mapping M --out OUT`
(in-process for speed; one case per class also as a real subprocess). Every case must give one
clear message naming the file, the column (or mapping key) and the problem; write nothing at OUT;
leave the inputs byte-identical; print no Python traceback; and exit with code 2.
"""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trustml.cli import main

N = 40
_R = np.random.default_rng(3)
FLAT = pl.DataFrame({"cid": [f"{i:04d}" for i in range(N)], "plan": _R.choice(["basic", "pro"], N),
                     "products": _R.integers(1, 5, N), "spend": _R.uniform(5, 50, N).round(2), "left": ["Yes", "No"] * (N // 2)})
FLAT_MAP = {"kind": "flat", "columns": {"id": "cid", "target": "left", "positive": ["Yes"], "negative": ["No"]},
            "pillars": {"account": ["plan", "spend"]}}
LOG = "cid,when,kind\na,2024-01-05,login\na,2024-02-07,ticket\nb,2024-01-09,login\nb,2024-03-01,login\n"
LOG_MAP = {"kind": "events", "columns": {"id": "cid", "timestamp": "when", "event_type": "kind"}}
SUBS = "cid,start,end,status\na,2024-01-01,2024-02-01,active\na,2024-02-01,2024-05-01,active\nb,2024-01-02,2024-02-20,cancelled\n"


def _toml(d: dict, prefix: str = "") -> str:
    """A small TOML writer for the corpus' mappings (top-level scalars first, then tables)."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {val(x)}" for k, x in v.items()) + "}"
        return repr(v)
    flat = [f"{k} = {val(v)}" for k, v in d.items() if not isinstance(v, dict)]
    tables = [f"\n[{prefix}{k}]\n" + "\n".join(f"{json.dumps(kk)} = {val(vv)}" for kk, vv in v.items())
              for k, v in d.items() if isinstance(v, dict)]
    return "\n".join(flat) + "\n" + "\n".join(tables) + "\n"


def _with(d: dict, **over) -> dict:
    out = json.loads(json.dumps(d))
    for path, v in over.items():
        *head, last = path.split("__")
        node = out
        for h in head:
            node = node.setdefault(h, {})
        node[last] = v
    return out


def _flat_rows(n: int) -> pl.DataFrame:
    r = np.random.default_rng(n)
    return pl.DataFrame({"cid": [f"{i:04d}" for i in range(n)], "plan": r.choice(["basic", "pro"], n),
                         "products": r.integers(1, 5, n), "spend": r.uniform(5, 50, n).round(2), "left": ["Yes", "No"] * (n // 2)})


def _flat_csv(df: pl.DataFrame = FLAT) -> bytes:
    return df.write_csv().encode()


def _parquet(df: pl.DataFrame) -> bytes:
    import io
    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


# class -> [(case id, {file name: bytes | str}, mapping dict | None (a folder) , words the message must hold)]
CORPUS = {
    "timestamps that are numbers": [
        ("yyyymmdd integers without a format", {"log.csv": "cid,when,kind\na,20240105,login\nb,20240209,login\n"}, LOG_MAP,
         ["log.csv", "'when'", "timestamp_format", "epoch_s"]),
        ("milliseconds declared as seconds", {"log.csv": "cid,when,kind\na,1704450000000,login\nb,1707000000000,login\n"},
         _with(LOG_MAP, columns__timestamp_format="epoch_s"), ["log.csv", "'when'", "implausible"]),
        ("text in an epoch column", {"log.csv": "cid,when,kind\na,1704450000,login\nb,yesterday,login\n"},
         _with(LOG_MAP, columns__timestamp_format="epoch_s"), ["log.csv", "'when'", "not epoch_s numbers", "yesterday"]),
    ],
    "paths that are folders": [
        ("mapping path is a folder", {"data.csv": _flat_csv(), "mapping.toml/": None}, FLAT_MAP, ["mapping.toml", "is a folder"]),
        ("data path is a folder", {"data.csv/": None}, FLAT_MAP, ["data.csv", "is a folder"]),
    ],
    "files that are not what they claim": [
        ("a corrupt Excel file", {"data.xlsx": b"PK\x03\x04 not really a workbook"}, FLAT_MAP, ["data.xlsx", "cannot read as Excel"]),
        ("an Excel file named .csv", {"data.csv": b"PK\x03\x04\x14\x00\x06\x00 workbook bytes"}, FLAT_MAP, ["data.csv", "Excel", "xlsx"]),
        ("a parquet file that is text", {"data.parquet": _flat_csv()}, FLAT_MAP, ["data.parquet", "cannot read as parquet"]),
    ],
    "labels that do not fit": [
        ("numeric target with three values", {"data.csv": _flat_csv(FLAT.with_columns(left=pl.Series([0, 1, 2, 1] * (N // 4))))},
         _with(FLAT_MAP, columns={"id": "cid", "target": "left", "positive": [1]}), ["data.csv", "'left'", "3 distinct labels"]),
        ("Y where the mapping says Yes", {"data.csv": _flat_csv(FLAT.with_columns(pl.col("left").str.slice(0, 1)))}, FLAT_MAP,
         ["data.csv", "'left'", "unknown labels", "['N', 'Y']"]),
        ("Y/N and no negative list", {"data.csv": _flat_csv(FLAT.with_columns(pl.col("left").str.slice(0, 1)))},
         _with(FLAT_MAP, columns={"id": "cid", "target": "left", "positive": ["Yes"]}), ["data.csv", "'left'", "no label matches"]),
        ("a third label beside booleans", {"data.csv": _flat_csv(FLAT.with_columns(left=pl.Series(["true", "false", "maybe", "true"] * (N // 4))))},
         _with(FLAT_MAP, columns={"id": "cid", "target": "left", "positive": [True], "negative": [False]}),
         ["data.csv", "'left'", "unknown labels", "maybe"]),
    ],
    "mappings that contradict themselves": [
        ("a column in two pillars", {"data.csv": _flat_csv()}, _with(FLAT_MAP, pillars={"account": ["plan"], "promises": ["plan"]}),
         ["map.toml", "pillars.promises", "'plan' is also in pillars.account"]),
        ("a reversed actionable range", {"data.csv": _flat_csv()}, _with(FLAT_MAP, actionable={"spend": {"min": 50, "max": 5}}),
         ["map.toml", "actionable.spend", "reversed"]),
        ("fractions for a whole-number column", {"data.csv": _flat_csv()}, _with(FLAT_MAP, actionable={"products": [1, 1.5, 2]}),
         ["data.csv", "'products'", "whole numbers"]),
        ("a range for a text column", {"data.csv": _flat_csv()}, _with(FLAT_MAP, actionable={"plan": {"min": 0, "max": 1}}),
         ["data.csv", "'plan'", "list of allowed values"]),
    ],
    "NUL bytes in text": [
        ("NUL inside a CSV value", {"data.csv": _flat_csv().replace(b"basic", b"ba\x00sic", 1)}, FLAT_MAP, ["data.csv", "NUL", "line"]),
        ("UTF-16 text", {"data.csv": FLAT.write_csv().encode("utf-16")}, FLAT_MAP, ["data.csv", "NUL", "UTF-16"]),
        ("NUL inside a parquet string", {"data.parquet": _parquet(FLAT.with_columns(plan=pl.lit("pro\x00")))}, FLAT_MAP,
         ["data.parquet", "'plan'", "NUL"]),
    ],
    "implausible dates": [
        ("events in 1900", {"log.csv": LOG.replace("2024-01-05", "1900-01-01")}, LOG_MAP, ["log.csv", "'when'", "before 1970", "1900-01-01"]),
        ("events in 2099", {"log.csv": LOG.replace("2024-03-01", "2099-12-31")}, LOG_MAP, ["log.csv", "'when'", "implausible", "2099-12-31"]),
        ("subscription starting in 1900", {"log.csv": LOG, "subs.csv": SUBS.replace("2024-01-02", "1900-01-01").replace(",status", ",note")
                                                                          .replace("active", "x").replace("cancelled", "x")},
         _with(LOG_MAP, subscriptions={"file": "subs.csv", "start": "start", "end": "end"}), ["subs.csv", "'start'", "before 1970"]),
    ],
    "event logs that do not add up": [
        ("null timestamps", {"log.csv": LOG.replace("2024-02-07", "")}, LOG_MAP, ["log.csv", "'when'", "missing timestamps"]),
        ("customers missing from the subscriptions", {"log.csv": LOG + "zz,2024-03-01,login\n", "subs.csv": SUBS},
         _with(LOG_MAP, subscriptions={"file": "subs.csv", "start": "start", "end": "end"}, drop=["status"]),
         ["log.csv", "'cid'", "not in the subscriptions file", "zz"]),
        ("cancellation churn without cancellations", {"log.csv": LOG}, _with(LOG_MAP, churn={"definition": "cancellation"}),
         ["log.csv", "'kind'", "no event is a 'cancellation'"]),
        ("every subscription still running", {"log.csv": LOG, "subs.csv": SUBS.replace("2024-02-20", "2024-09-01")},
         _with(LOG_MAP, subscriptions={"file": "subs.csv", "start": "start", "end": "end"}, churn={"as_of": "2024-04-01"}, drop=["status"]),
         ["subs.csv", "'end'", "no subscription period ends before the as-of date"]),
        ("a status column that is the outcome", {"log.csv": LOG, "subs.csv": SUBS},
         _with(LOG_MAP, subscriptions={"file": "subs.csv", "start": "start", "end": "end"}, churn={"as_of": "2024-04-01"}),
         ["subs.csv", "'status'", "LEAK", "drop"]),
    ],
    "too wide or too many categories": [
        ("600 columns", {"data.csv": _flat_csv(FLAT.with_columns([pl.lit(float(i)).alias(f"x{i}") for i in range(600)]))}, FLAT_MAP,
         ["data.csv", "candidate feature columns", "[columns] keep"]),
        ("a mapped 60-value category", {"data.csv": _flat_csv(_flat_rows(120).with_columns(plan=pl.format("state{}", pl.int_range(120) % 60)))},
         FLAT_MAP, ["data.csv", "'plan'", "60 distinct values", "max_categories = 60"]),
    ],
}
CASES = [(cls, *case) for cls, cases in CORPUS.items() for case in cases]


def _write(tmp_path: Path, files: dict, mapping: dict) -> tuple[Path, Path, Path]:
    """Write the case's files under tmp_path/in; a name ending in '/' is a folder where a file is expected."""
    src = tmp_path / "in"
    src.mkdir()
    map_path, data = src / "map.toml", None
    for name, content in files.items():
        path = src / name.rstrip("/")
        if name.endswith("/"):
            path.mkdir()
        else:
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        if name.rstrip("/").endswith(".toml"):
            map_path = path
        elif data is None and not name.startswith("subs"):
            data = path
    if not map_path.exists():
        map_path.write_text(_toml(mapping))
    return data, map_path, tmp_path / "out" / "features.parquet"


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


def _run_in_process(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    return int(e.value.code or 0), capsys.readouterr().err


def test_the_corpus_covers_every_class_with_several_cases():
    assert len(CORPUS) >= 8 and all(len(c) >= 2 for c in CORPUS.values())
    assert len({c[1] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_a_clear_message_and_nothing_written(case, tmp_path, capsys):
    cls, name, files, mapping, words = case
    data, map_path, out = _write(tmp_path, files, mapping)
    before = _digest(tmp_path / "in")
    code, message = _run_in_process(["features", "--data", str(data), "--mapping", str(map_path), "--out", str(out)], capsys)
    assert "Traceback" not in message, message
    for w in words:
        assert w in message, f"{cls} / {name}: {w!r} not in {message!r}"
    assert not out.parent.exists() or not any(out.parent.iterdir())   # nothing written, not even a sidecar
    assert _digest(tmp_path / "in") == before


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_user_mistakes_exit_with_code_2(case, tmp_path, capsys):
    """Needs cli.main to exit with code 2 on a ContractError (the lead's change to cli.main)."""
    cls, name, files, mapping, words = case
    data, map_path, out = _write(tmp_path, files, mapping)
    code, _ = _run_in_process(["features", "--data", str(data), "--mapping", str(map_path), "--out", str(out)], capsys)
    assert code == 2


@pytest.mark.parametrize("cls", list(CORPUS))
def test_the_real_command_on_one_case_per_class(cls, tmp_path):
    _, name, files, mapping, words = next(c for c in CASES if c[0] == cls)
    data, map_path, out = _write(tmp_path, files, mapping)
    before = _digest(tmp_path / "in")
    exe = Path(sys.executable).with_name("trustml")
    run = subprocess.run([str(exe), "features", "--data", str(data), "--mapping", str(map_path), "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert "Traceback" not in run.stderr, run.stderr
    assert all(w in run.stderr for w in words), run.stderr
    assert not out.exists()
    assert _digest(tmp_path / "in") == before
    assert run.returncode == 2, (run.returncode, run.stderr)
