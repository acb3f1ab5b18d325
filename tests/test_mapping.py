"""Bring your own data: shipped mappings on the real datasets, and a corpus of malformed inputs."""

import hashlib

import numpy as np
import polars as pl
import pytest
import yaml
from support import shared_data

from trustml.cli import main
from trustml.contract import ContractError
from trustml.evaluate import cross_validate
from trustml.mapping import Mapping, event_tables, flat_table, load_mapping, read_data
from trustml.study import Study

# -- real data ------------------------------------------------------------------------------------


def test_telco_with_its_shipped_mapping():
    path = shared_data("telco_customer_churn") / "Telco-Customer-Churn.csv"
    m = load_mapping("telco")
    table = flat_table(read_data(path, m), m, source=str(path))
    reg = table.registry
    assert table.frame.height == 7043 and table.frame["churned"].mean() == pytest.approx(1869 / 7043)
    assert reg["Contract"].pillar == "promises" and reg["Contract"].actionable and reg["Contract"].categorical
    assert reg["TechSupport"].pillar == "service_quality" and reg["PaperlessBilling"].pillar == "transparency"
    assert table.frame["TotalCharges"].null_count() == 11  # blanks for tenure 0 are missing, not dropped
    assert "gender" not in reg.names and "sensitive" in table.dropped["gender"]
    cv = cross_validate(table, folds=5)
    assert cv["lightgbm_roc_auc"].mean() > 0.83  # the benchmark prints the exact figure


def test_telco_study_what_if_moves_contract(tmp_path):
    from trustml.whatif import campaign, what_if
    study = Study.load(shared_data("telco_customer_churn") / "Telco-Customer-Churn.csv", "telco")
    row = study.latest.filter(pl.col("Contract") == "Month-to-month").head(1)
    r = what_if(study.trained, row, {"Contract": "Two year"})
    assert r.risk_after < r.risk_before
    plan = campaign(study.trained, study.latest, study.value(study.latest), top_n=5)
    assert plan["customer"].str.starts_with("cust-").all()
    card = study.model_card()
    assert card["data"]["kind"] == "flat" and "gender" in card["left_out"]


def test_cdnow_through_its_mapping():
    path = shared_data("cdnow") / "CDNOW_master.txt"
    m = load_mapping("cdnow")
    customers, events, spec, snaps, _ = event_tables(read_data(path, m), m, source=str(path))
    assert events.height == 69_659 and customers.height == 23_570
    assert events["timestamp"].min().year == 1997 and events["timestamp"].max().date().isoformat() == "1998-06-30"
    assert events["value"].sum() == pytest.approx(2_500_315.63, rel=1e-6)  # awk over the 4th column agrees
    assert set(events["event_type"]) == {"purchase"}
    assert snaps.churn == "inactivity" and snaps.horizon == "90d"


def test_yaml_and_toml_mappings_are_the_same(tmp_path):
    toml = load_mapping("telco")
    import tomllib
    from pathlib import Path
    d = tomllib.loads(Path(toml.origin).read_text())
    (tmp_path / "telco.yaml").write_text(yaml.safe_dump(d))
    y = load_mapping(tmp_path / "telco.yaml")
    assert {k: v for k, v in vars(y).items() if k != "origin"} == {k: v for k, v in vars(toml).items() if k != "origin"}


def test_unmapped_columns_are_kept_as_other():
    m = Mapping.from_dict({"kind": "flat", "columns": {"id": "id", "target": "y", "positive": ["1"]}})
    df = pl.DataFrame({"id": ["a", "b", "c"], "y": [1, 0, 1], "mystery": [1.0, 2.0, 3.0]})
    t = flat_table(df, m)
    assert t.registry["mystery"].pillar == "other"


# -- the malformed-input corpus ------------------------------------------------------------------

rng = np.random.default_rng(0)
N = 60
GOOD = pl.DataFrame({
    "customerID": [f"{i:04d}-ABCDE" for i in range(N)],
    "tenure": rng.integers(0, 72, N),
    "Contract": rng.choice(["Month-to-month", "One year", "Two year"], N),
    "TechSupport": rng.choice(["No", "Yes"], N),
    "MonthlyCharges": rng.uniform(20, 110, N).round(2),
    "Churn": (["Yes", "No"] * N)[:N],
})
FLAT = {"kind": "flat", "columns": {"id": "customerID", "target": "Churn", "positive": ["Yes"], "negative": ["No"]},
        "pillars": {"promises": ["Contract"], "service_quality": ["TechSupport"]}, "actionable": ["Contract"]}
EVENTS_CSV = "cid,when,kind,amount\na,2024-01-05,purchase,10\na,2024-02-07,complaint,\nb,2024-01-09,purchase,5\n"
EVENTS = {"kind": "events", "columns": {"id": "cid", "timestamp": "when", "event_type": "kind", "value": "amount"},
          "pillars": {"service_quality": ["complaint"]}}


def _csv(df):
    return df.write_csv()


def _set(df, col, values):
    return df.with_columns(pl.Series(col, values))


def _with(d, **over):
    import copy
    d = copy.deepcopy(d)
    for path, v in over.items():
        *head, last = path.split("__")
        node = d
        for h in head:
            node = node.setdefault(h, {})
        if v is None:
            node.pop(last, None)
        else:
            node[last] = v
    return d


STR = GOOD.with_columns(pl.col("tenure").cast(pl.String), pl.col("MonthlyCharges").cast(pl.String))
CASES = [
    # (id, data bytes, data suffix, mapping (dict -> TOML-ish YAML, or raw text), expected substrings)
    ("id column missing", _csv(GOOD.drop("customerID")), ".csv", FLAT, ["customerID", "not in the file"]),
    ("misspelled id column", _csv(GOOD.rename({"customerID": "customer_ID"})), ".csv", FLAT, ["customerID", "did you mean 'customer_ID'"]),
    ("target column missing", _csv(GOOD.drop("Churn")), ".csv", FLAT, ["'Churn'", "columns.target"]),
    ("pillar names an absent column", _csv(GOOD), ".csv", _with(FLAT, pillars__empathy=["AgentScore"]), ["AgentScore", "pillars.empathy"]),
    ("actionable names an absent column", _csv(GOOD), ".csv", _with(FLAT, actionable=["Discount"]), ["Discount", "actionable"]),
    ("sensitive names an absent column", _csv(GOOD), ".csv", _with(FLAT, sensitive=["gender"]), ["gender", "sensitive"]),
    ("null ids", _csv(_set(GOOD, "customerID", [None] + GOOD["customerID"].to_list()[1:])), ".csv", FLAT, ["customerID", "null ids"]),
    ("duplicate ids", _csv(_set(GOOD, "customerID", ["X"] * 2 + GOOD["customerID"].to_list()[2:])), ".csv", FLAT, ["customerID", "duplicate ids", "'X'"]),
    ("target with one class", _csv(_set(GOOD, "Churn", ["No"] * N)), ".csv", FLAT, ["Churn", "one class"]),
    ("target with unknown labels", _csv(_set(GOOD, "Churn", ["Maybe"] + GOOD["Churn"].to_list()[1:])), ".csv", FLAT, ["Churn", "unknown labels", "Maybe"]),
    ("target with missing labels", _csv(_set(GOOD, "Churn", [None] + GOOD["Churn"].to_list()[1:])), ".csv", FLAT, ["Churn", "missing churn labels"]),
    ("empty file", "", ".csv", FLAT, ["file is empty"]),
    ("header only", "customerID,Churn\n", ".csv", FLAT, ["no data rows"]),
    ("not UTF-8", "customerID,Contract,Churn\n1,Ann\xe9e,Yes\n".encode("latin-1"), ".csv", FLAT, ["not UTF-8", "line 2"]),
    ("NaN in a number column", _csv(_set(GOOD, "MonthlyCharges", [float("nan")] + GOOD["MonthlyCharges"].to_list()[1:])), ".csv", FLAT, ["MonthlyCharges", "NaN or infinite"]),
    ("inf in a number column", _csv(_set(GOOD, "MonthlyCharges", [float("inf")] + GOOD["MonthlyCharges"].to_list()[1:])), ".csv", FLAT, ["MonthlyCharges", "NaN or infinite"]),
    ("unknown pillar", _csv(GOOD), ".csv", _with(FLAT, pillars__trustiness=["Contract"]), ["pillars.trustiness", "unknown pillar"]),
    ("kind missing", _csv(GOOD), ".csv", _with(FLAT, kind=None), ["kind", "must be 'flat' or 'events'"]),
    ("unknown mapping key", _csv(GOOD), ".csv", _with(FLAT, colums={"id": "x"}), ["colums", "unknown key"]),
    ("mapping is not valid TOML", _csv(GOOD), ".csv", "kind = flat\n[columns\n", ["map.toml", "cannot parse"]),
    ("mapping is a list", _csv(GOOD), ".csv", "- kind\n- flat\n", ["map.yaml", "table of keys"]),
    ("direction not -1/0/+1", _csv(GOOD), ".csv", _with(FLAT, directions={"tenure": 2}), ["directions.tenure", "-1, 0 or +1"]),
    ("actionable value never occurs", _csv(GOOD), ".csv", _with(FLAT, actionable={"Contract": ["Lifetime"]}), ["Contract", "never occur", "Lifetime"]),
    ("duplicate column names", "customerID,Churn,Churn\na,Yes,No\nb,No,No\n", ".csv", FLAT, ["'Churn'", "duplicate column name"]),
    ("ragged CSV rows", "customerID,Contract,Churn\na,One year,Yes,extra,more\nb,Two year,No\n", ".csv", FLAT, ["cannot read as csv"]),
    ("mapped column is free text", _csv(GOOD.with_columns(pl.Series("Contract", [f"note {i}" for i in range(N)]))), ".csv", FLAT, ["Contract", "not usable as a feature"]),
    ("no feature columns", _csv(GOOD.select("customerID", "Churn")), ".csv", _with(FLAT, pillars={}, actionable=[]), ["no usable feature columns"]),
    ("flat mapping without target", _csv(GOOD), ".csv", _with(FLAT, columns__target=None), ["columns.target", "churn column"]),
    ("numbers column with text", _csv(STR.with_columns(pl.Series("tenure", ["12"] * (N - 1) + ["twelve"]))), ".csv",
     _with(FLAT, actionable={"tenure": [0, 72]}), ["tenure"]),
    ("mixed date formats", "cid,when,kind,amount\na,2024-01-05,purchase,1\nb,05/01/2024,purchase,2\n", ".csv", EVENTS, ["'when'", "do not parse", "05/01/2024"]),
    ("dates not in the declared format", EVENTS_CSV, ".csv", _with(EVENTS, columns__timestamp_format="%d.%m.%Y"), ["'when'", "%d.%m.%Y"]),
    ("events after the as-of date", EVENTS_CSV, ".csv", _with(EVENTS, churn={"as_of": "2024-02-01"}), ["'when'", "at or after the as-of date 2024-02-01"]),
    ("null ids in events", "cid,when,kind,amount\n,2024-01-05,purchase,1\nb,2024-01-06,purchase,2\n", ".csv", EVENTS, ["'cid'", "null ids"]),
    ("value column with text", "cid,when,kind,amount\na,2024-01-05,purchase,ten\nb,2024-01-06,purchase,2\n", ".csv", EVENTS, ["'amount'", "not numbers", "ten"]),
    ("value column with inf", "cid,when,kind,amount\na,2024-01-05,purchase,inf\nb,2024-01-06,purchase,2\n", ".csv", EVENTS, ["'amount'", "NaN or infinite"]),
    ("event type column absent", EVENTS_CSV.replace("kind", "type"), ".csv", EVENTS, ["'kind'", "not in the file"]),
    ("events mapping without timestamp", EVENTS_CSV, ".csv", _with(EVENTS, columns__timestamp=None), ["columns.timestamp", "timestamp column"]),
    ("events without type column or fixed type", EVENTS_CSV, ".csv", _with(EVENTS, columns__event_type=None), ["columns.event_type"]),
    ("missing event types", "cid,when,kind,amount\na,2024-01-05,,1\nb,2024-01-06,purchase,2\n", ".csv", EVENTS, ["'kind'", "missing event types"]),
    ("whitespace file with ragged rows", "a 19970101 1 10.0\nb 19970102 2\n", ".txt",
     _with(EVENTS, source={"format": "whitespace", "columns": ["cid", "when", "n", "amount"]}, columns__event_type=None, events={"type": "purchase"},
           columns__timestamp_format="%Y%m%d"), ["rows with other than 4 fields", "line 2"]),
    ("whitespace file without header or column names", "a 19970101 1 10.0\n", ".txt",
     _with(EVENTS, source={"format": "whitespace"}), ["source.columns", "column names"]),
    ("timestamps of the wrong type", None, ".parquet", EVENTS, ["'when'", "wrong type Boolean"]),
    ("unknown source format", _csv(GOOD), ".csv", _with(FLAT, source={"format": "xlsx"}), ["source.format", "unknown format 'xlsx'"]),
    ("id column is all null in events", "cid,when,kind,amount\n,2024-01-05,purchase,1\n,2024-01-06,purchase,2\n", ".csv", EVENTS, ["'cid'", "null ids"]),
]


def _write_case(tmp_path, data, suffix, mapping):
    src = tmp_path / "in"
    src.mkdir()
    data_path = src / f"data{suffix}"
    if suffix == ".parquet":
        pl.DataFrame({"cid": ["a", "b"], "when": [True, False], "kind": ["purchase"] * 2, "amount": [1.0, 2.0]}).write_parquet(data_path)
    else:
        data_path.write_bytes(data if isinstance(data, bytes) else data.encode())
    if isinstance(mapping, str):
        map_path = src / ("map.yaml" if mapping.startswith("-") else "map.toml")
        map_path.write_text(mapping)
    else:
        map_path = src / "map.yaml"
        map_path.write_text(yaml.safe_dump(mapping))
    return data_path, map_path


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_gets_a_clear_error_and_nothing_is_written(case, tmp_path, capsys):
    name, data, suffix, mapping, expected = case
    data_path, map_path = _write_case(tmp_path, data, suffix, mapping)
    before = _digest(data_path.parent)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["report", "--data", str(data_path), "--mapping", str(map_path), "--out", str(out), "--quiet"])
    message = str(e.value.code)
    assert message.startswith("trustml report:"), message
    for want in expected:
        assert want in message, f"{name}: {want!r} not in {message!r}"
    named_file = data_path.name in message or map_path.name in message
    assert named_file or "columns." in message or "source." in message, message
    assert not out.exists()                      # nothing partial
    assert _digest(data_path.parent) == before   # inputs untouched


def test_a_missing_data_file_or_mapping_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        Study.load(tmp_path / "nowhere.csv", "telco")
    with pytest.raises(FileNotFoundError, match="no_such_mapping"):
        load_mapping("no_such_mapping")
    with pytest.raises(ContractError):
        Mapping.from_dict({"kind": "flat"})


def test_event_log_with_a_subscriptions_table_gives_the_contract_labels(world, table, tmp_path):
    """The simulator's tables, written as a user would have them: an event log without cancellations, and a
    subscriptions file with start and end dates. Labels come out as from the contract tables."""
    ends = world.events.filter(pl.col("event_type") == "cancellation").group_by("customer_id").agg(pl.col("timestamp").min().alias("ended"))
    subs = (world.customers.join(ends, on="customer_id", how="left")
            .select(pl.col("customer_id").alias("account"), pl.col("signup_date").alias("started"), "ended", "plan", "monthly_price"))
    subs.write_csv(tmp_path / "subscriptions.csv")
    (world.events.filter(pl.col("event_type") != "cancellation")
     .rename({"customer_id": "account", "timestamp": "at", "event_type": "what", "value": "amount"}).write_parquet(tmp_path / "log.parquet"))
    (tmp_path / "m.yaml").write_text(
        "kind: events\ncolumns: {id: account, timestamp: at, event_type: what, value: amount}\n"
        "subscriptions: {file: subscriptions.csv, start: started, end: ended}\npillars: {account: [plan, monthly_price]}\n"
        f"churn: {{as_of: '{world.as_of.isoformat()}'}}\n")
    study = Study.load(tmp_path / "log.parquet", tmp_path / "m.yaml")
    got = study.table.frame.select("customer_id", "snapshot_date", "churned")
    want = table.frame.select("customer_id", "snapshot_date", "churned")
    assert study.table.snapshots.churn == "cancellation"
    assert got.equals(want)
    assert study.registry["plan"].categorical and study.registry["monthly_price"].pillar == "account"


def test_subscriptions_problems_name_the_file_and_column(tmp_path):
    (tmp_path / "log.csv").write_text("cid,when,kind\na,2024-01-05,usage\nz,2024-01-06,usage\n")
    (tmp_path / "subs.csv").write_text("cid,since,until\na,2024-01-10,2023-11-01\n")
    (tmp_path / "m.yaml").write_text("kind: events\ncolumns: {id: cid, timestamp: when, event_type: kind}\n"
                                     "subscriptions: {file: subs.csv, start: since, end: until}\n")
    with pytest.raises(ContractError) as e:
        Study.load(tmp_path / "log.csv", tmp_path / "m.yaml")
    msg = str(e.value)
    assert "file 'subs.csv', column 'until': ends before it starts" in msg
    assert "file 'log.csv', column 'when': events before the customer's start in subs.csv (1 row; e.g. 'a')" in msg
    assert "file 'log.csv', column 'cid': customer id not in the subscriptions file subs.csv" in msg and "'z'" in msg
    (tmp_path / "m.yaml").write_text("kind: events\ncolumns: {id: cid, timestamp: when, event_type: kind}\nsubscriptions: {file: subs.csv}\n")
    with pytest.raises(ContractError, match="subscriptions.*needs `file` and `start`"):
        Study.load(tmp_path / "log.csv", tmp_path / "m.yaml")
