"""Bring your own data: shipped mappings on the real datasets, and a corpus of malformed inputs."""

import datetime as dt
import hashlib
import tomllib

import numpy as np
import polars as pl
import pytest
import yaml
from support import shared_data

from trustml.cli import main
from trustml.contract import ContractError, DataWarnings
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
    ("unknown source format", _csv(GOOD), ".csv", _with(FLAT, source={"format": "sas7bdat"}), ["source.format", "unknown format 'sas7bdat'"]),
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
    message = capsys.readouterr().err
    assert e.value.code == 2 and message.startswith("trustml report:") and "Traceback" not in message, (e.value.code, message)
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


# -- issue 13: flat tables as they come ------------------------------------------------------------

def _flat(d: dict) -> Mapping:
    return Mapping.from_dict({"kind": "flat", **d})


def _bank(n=80, seed=1):
    r = np.random.default_rng(seed)
    return pl.DataFrame({"RowNumber": np.arange(1, n + 1), "Surname": [f"name{i}" for i in range(n)],
                         "NumOfProducts": r.integers(1, 5, n), "IsActiveMember": r.integers(0, 2, n),
                         "Balance": r.uniform(0, 1e5, n).round(2), "Status": r.choice(["Open", "Closed", "Unknown"], n),
                         "Exited": ([True, False] * n)[:n]})


def test_flat_without_id_numbers_rows_and_drops_row_numbers():
    w = DataWarnings()
    m = _flat({"columns": {"target": "Exited", "positive": [True], "negative": [False]}, "drop": ["Surname"],
               "rows": {"exclude": {"Status": ["Unknown"]}}})
    df = _bank()
    t = flat_table(df, m, source="bank.csv", warnings=w)
    kept = df.with_row_index("line", 1).filter(pl.col("Status") != "Unknown")
    assert t.frame["customer_id"].to_list() == [f"row-{i}" for i in kept["line"]]
    assert "RowNumber" not in t.registry.names and "row number" in t.dropped["RowNumber"]
    assert "Surname" not in t.registry.names and "drop" in t.dropped["Surname"]
    assert t.frame.height == kept.height and t.frame["churned"].to_list() == kept["Exited"].cast(pl.Int8).to_list()
    assert any("rows left out" in p.problem for p in w) and any("no id column" in p.problem for p in w)


@pytest.mark.parametrize("labels,pos,neg", [
    (["True", "False"], [True], [False]), (["TRUE", "FALSE"], ["true"], None), (["1", "0"], [1], [0]),
    (["Yes", "No"], ["yes"], ["no"]), (["1.0", "0.0"], ["1"], None), (["Churned", "Stayed"], ["Churned"], ["Stayed"])])
def test_labels_are_matched_as_the_file_writes_them(labels, pos, neg):
    df = pl.DataFrame({"id": [f"c{i}" for i in range(6)], "y": [labels[i % 2] for i in range(6)], "x": [1.0, 2, 3, 4, 5, 6]})
    cols = {"id": "id", "target": "y", "positive": pos, **({"negative": neg} if neg is not None else {})}
    t = flat_table(df, _flat({"columns": cols}))
    assert t.frame["churned"].to_list() == [1, 0, 1, 0, 1, 0]


def test_toml_booleans_and_integers_as_labels(tmp_path):
    (tmp_path / "m.toml").write_text('kind = "flat"\n[columns]\ntarget = "y"\npositive = [true]\nnegative = [false]\n')
    m = load_mapping(tmp_path / "m.toml")
    df = pl.DataFrame({"y": [True, False, True], "x": [1.0, 2.0, 3.0]})
    assert flat_table(df, m).frame["churned"].to_list() == [1, 0, 1]


@pytest.mark.parametrize("values,pos,neg,words", [
    ([0, 1, 2, 0, 1, 2], ["1"], None, ["3 distinct labels", "['0', '1', '2']", "negative"]),
    (["Y", "N"] * 3, ["Yes"], ["No"], ["unknown labels", "labels in the file: ['N', 'Y']", "'Yes'"]),
    (["Y", "N"] * 3, ["Yes"], None, ["no label matches positive ['Yes']", "['N', 'Y']"]),
])
def test_labels_that_do_not_fit_are_an_error_naming_what_was_found(values, pos, neg, words):
    df = pl.DataFrame({"id": [f"c{i}" for i in range(6)], "y": values, "x": [1.0, 2, 3, 4, 5, 6]})
    with pytest.raises(ContractError) as e:
        flat_table(df, _flat({"columns": {"id": "id", "target": "y", "positive": pos, **({"negative": neg} if neg else {})}}),
                   source="f.csv")
    msg = str(e.value)
    assert "file 'f.csv', column 'y'" in msg and all(w in msg for w in words), msg


def test_max_categories_is_configurable_and_the_message_says_how():
    states = [f"S{i:02d}" for i in range(51)]
    df = pl.DataFrame({"id": [f"c{i}" for i in range(102)], "y": [1, 0] * 51, "State": states * 2})
    with pytest.raises(ContractError, match=r"State.*51 distinct values.*max_categories = 51"):
        flat_table(df, _flat({"columns": {"id": "id", "target": "y"}, "pillars": {"account": ["State"]}}))
    for source in ({"max_categories": 60}, {"max_categories": {"State": 51}}):
        t = flat_table(df, _flat({"columns": {"id": "id", "target": "y"}, "pillars": {"account": ["State"]}, "source": source}))
        assert t.registry["State"].categorical


def test_numeric_levers_take_lists_ranges_and_the_data_range():
    df = _bank()
    m = _flat({"columns": {"target": "Exited", "positive": [True]},
               "actionable": {"NumOfProducts": [1, 2, 3, 4], "IsActiveMember": None, "Balance": {"min": 0, "max": 100000, "step": 500}}})
    reg = flat_table(df, m).registry
    from trustml.whatif import levers
    lv = {x.name: x for x in levers(reg)}
    assert lv["NumOfProducts"].values == (1.0, 2.0, 3.0, 4.0) and lv["NumOfProducts"].integer
    assert lv["IsActiveMember"].values == (0.0, 1.0) and lv["IsActiveMember"].allowed_text() == "one of [0, 1]"
    assert (lv["Balance"].low, lv["Balance"].high, lv["Balance"].step) == (0.0, 100000.0, 500.0)
    assert all(v % 500 == 0 for v in lv["Balance"].grid(51234.0, 9))
    m2 = _flat({"columns": {"target": "Exited", "positive": [True]}, "actionable": ["NumOfProducts"]})
    p = {x.name: x for x in levers(flat_table(df, m2).registry)}["NumOfProducts"]
    assert (p.low, p.high, p.integer) == (float(df["NumOfProducts"].min()), float(df["NumOfProducts"].max()), True)


@pytest.mark.parametrize("act,words", [
    ({"NumOfProducts": {"min": 4, "max": 1}}, ["actionable.NumOfProducts", "reversed"]),
    ({"NumOfProducts": [1.5, 2]}, ["NumOfProducts", "whole numbers"]),
    ({"NumOfProducts": {"min": 0, "max": 10, "step": 3}}, ["actionable.NumOfProducts", "whole number of steps"]),
    ({"NumOfProducts": {"low": 0}}, ["actionable.NumOfProducts", "unknown keys"]),
])
def test_bad_lever_declarations_are_errors(act, words):
    with pytest.raises(ContractError) as e:
        flat_table(_bank(), _flat({"columns": {"target": "Exited", "positive": [True]}, "actionable": act}))
    assert all(w in str(e.value) for w in words), str(e.value)


def test_a_column_in_two_pillars_is_an_error():
    with pytest.raises(ContractError, match=r"'Balance' is also in pillars.account"):
        _flat({"columns": {"target": "Exited"}, "pillars": {"account": ["Balance"], "engagement": ["Balance"]}})


def test_width_guard_says_what_is_too_wide_and_how_to_choose():
    wide = pl.DataFrame({f"f{i}": [0.0, 1.0, 2.0, 3.0] for i in range(520)}).with_columns(y=pl.Series([1, 0, 1, 0]))
    with pytest.raises(ContractError, match=r"520 candidate feature columns.*\[columns\] keep"):
        flat_table(wide, _flat({"columns": {"target": "y"}}), source="wide.csv")
    t = flat_table(wide, _flat({"columns": {"target": "y", "keep": ["f1", "f2"]}}), source="wide.csv")
    assert t.registry.names == ["f1", "f2"] and "keep" in t.dropped["f3"]


def test_excel_is_read_and_ids_keep_leading_zeros(tmp_path):
    pytest.importorskip("fastexcel")
    pytest.importorskip("xlsxwriter")
    df = pl.DataFrame({"id": ["007", "010", "011", "012"], "y": ["Yes", "No", "Yes", "No"], "x": [1.0, 2.0, 3.0, 4.0]})
    df.write_excel(tmp_path / "d.xlsx")
    m = _flat({"columns": {"id": "id", "target": "y"}})
    assert read_data(tmp_path / "d.xlsx", m)["id"].to_list() == ["007", "010", "011", "012"]
    df.write_csv(tmp_path / "d.csv")
    assert read_data(tmp_path / "d.csv", m)["id"].to_list() == ["007", "010", "011", "012"]   # read as text, not 7


def test_draft_mapping_guesses_and_flags_leaks(tmp_path):
    from trustml.mapping import draft_mapping
    r = np.random.default_rng(0)
    n = 200
    y = r.integers(0, 2, n)
    df = pl.DataFrame({"RowNumber": np.arange(1, n + 1), "CustomerId": [f"{i:06d}" for i in range(n)],
                       "Gender": r.choice(["F", "M"], n), "Contract": r.choice(["Monthly", "Yearly"], n),
                       "SupportTickets": r.integers(0, 5, n), "ClosedDate": [None if v == 0 else "2024-01-01" for v in y],
                       "Exited": y})
    text = draft_mapping(df, "bank.csv")
    m = Mapping.from_dict(tomllib.loads(text))
    assert (m.kind, m.id, m.target, m.sensitive, m.drop) == ("flat", "CustomerId", "Exited", ("Gender",), ("RowNumber",))
    assert "SupportTickets" in m.pillars["service_quality"] and "Contract" in m.pillars["promises"]
    assert "SUSPECTED LEAKAGE" in text and "ClosedDate: whether it is blank" in text
    (tmp_path / "bank.csv").write_bytes(df.write_csv().encode())
    (tmp_path / "m.toml").write_text(text)
    t = flat_table(read_data(tmp_path / "bank.csv", m), m, source="bank.csv")
    assert "RowNumber" not in t.registry.names


def test_draft_mapping_of_an_event_log():
    from trustml.mapping import draft_mapping
    df = pl.DataFrame({"user_id": ["a", "a", "b", "b"], "ts": ["2024-01-01", "2024-02-01", "2024-01-03", "2024-03-01"],
                       "event": ["login", "support_ticket", "login", "cancel"]})
    m = Mapping.from_dict(tomllib.loads(draft_mapping(df, "log.csv")))
    assert (m.kind, m.id, m.timestamp, m.event_type) == ("events", "user_id", "ts", "event")
    assert m.event_types == {"cancel": "cancellation"} and m.churn["definition"] == "cancellation"


def test_cli_mapping_drafts_a_file(tmp_path, capsys):
    _bank().write_csv(tmp_path / "bank.csv")
    main(["mapping", str(tmp_path / "bank.csv"), "--out", str(tmp_path / "m.toml")])
    m = load_mapping(tmp_path / "m.toml")
    assert m.target == "Exited" and "RowNumber" in m.drop
    assert (m.positive, m.negative) == ((True,), (False,))   # True/False in the file: TOML booleans, not lower-cased text
    with pytest.raises(SystemExit):
        main(["mapping", str(tmp_path / "bank.csv"), "--out", str(tmp_path / "m.toml")])   # exists: not overwritten silently


# -- issue 13/18: event logs --------------------------------------------------------------------------

def _events_mapping(**over):
    d = {"kind": "events", "columns": {"id": "cid", "timestamp": "when", "event_type": "kind"}, **over}
    return Mapping.from_dict(d, origin="/x/m.toml")


def test_epoch_seconds_and_milliseconds_become_dates():
    when = [dt.datetime(2024, 1, 5, 12), dt.datetime(2024, 2, 1)]
    secs = [int(t.replace(tzinfo=dt.UTC).timestamp()) for t in when]
    for values, fmt in ((secs, None), ([s * 1000 for s in secs], None), (secs, "epoch_s"), ([s * 1000 for s in secs], "epoch_ms")):
        w = DataWarnings()
        df = pl.DataFrame({"cid": ["a", "b"], "when": values, "kind": ["x", "y"]})
        m = _events_mapping(columns={"id": "cid", "timestamp": "when", "event_type": "kind", "timestamp_format": fmt}, churn={"definition": "inactivity"})
        _, events, *_ = event_tables(df, m, source="log.csv", warnings=w)
        assert sorted(events["timestamp"].to_list()) == when
        assert bool(w) == (fmt is None)   # detected by magnitude: said so


def test_utc_offsets_are_converted_and_said():
    df = pl.DataFrame({"cid": ["a", "b"], "when": ["2024-01-05T10:00:00+14:00", "2024-01-05T10:00:00+00:00"], "kind": ["x", "y"]})
    w = DataWarnings()
    _, events, *_ = event_tables(df, _events_mapping(), source="log.csv", warnings=w)
    assert sorted(events["timestamp"].to_list()) == [dt.datetime(2024, 1, 4, 20), dt.datetime(2024, 1, 5, 10)]
    assert any("converted to UTC" in p.problem for p in w)


def test_duplicate_event_rows_are_a_named_warning_and_kept():
    df = pl.DataFrame({"cid": ["a", "a", "b"], "when": ["2024-01-05"] * 3, "kind": ["x", "x", "y"]})
    w = DataWarnings()
    _, events, *_ = event_tables(df, _events_mapping(), source="log.csv", warnings=w)
    assert events.height == 3 and any("1 event rows repeat" in p.problem and "kept" in p.problem for p in w)


def _renewals(tmp_path, as_of="2024-07-01"):
    """Monthly renewal rows: 'a' renews to the end (censored), 'b' stops in March, 'c' pauses 40 days and returns,
    'd' changes plan in April."""
    subs = pl.DataFrame({
        "acct": ["a"] * 7 + ["b"] * 2 + ["c"] * 3 + ["d"] * 4,
        "start": ["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01", "2024-06-01", "2024-06-25",
                  "2024-01-10", "2024-02-10", "2024-01-05", "2024-03-16", "2024-04-16", "2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01"],
        "end": ["2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01", "2024-06-01", "2024-06-25", "2024-07-25",
                "2024-02-10", "2024-03-10", "2024-02-05", "2024-04-16", "2024-05-16", "2024-03-01", "2024-04-01", "2024-05-01", "2024-08-01"],
        "plan": ["basic"] * 12 + ["basic", "basic", "pro", "pro"],
        "mrr": [10.0] * 12 + [10.0, 10.0, 30.0, 30.0]})
    subs.write_csv(tmp_path / "subs.csv")
    log = pl.DataFrame({"acct": ["a", "b", "c", "d"], "at": ["2024-01-02", "2024-01-11", "2024-01-06", "2024-02-02"],
                        "what": ["login"] * 4})
    log.write_csv(tmp_path / "log.csv")
    m = Mapping.from_dict({"kind": "events", "columns": {"id": "acct", "timestamp": "at", "event_type": "what"},
                           "subscriptions": {"file": "subs.csv", "start": "start", "end": "end", "value": "mrr", "gap_days": 7},
                           "churn": {"as_of": as_of}}, origin=str(tmp_path / "m.toml"))
    return m


def test_subscription_renewals_merge_into_periods_and_future_ends_are_censored(tmp_path):
    from trustml.mapping import read_subscriptions
    m = _renewals(tmp_path)
    w = DataWarnings()
    subs, path = read_subscriptions(m, tmp_path / "log.csv")
    customers, events, spec, snaps, as_of = event_tables(read_data(tmp_path / "log.csv", m), m, source="log.csv",
                                                         subscriptions=subs, subscriptions_source=str(path), warnings=w)
    cancels = events.filter(pl.col("event_type") == "cancellation").select("customer_id", pl.col("timestamp").dt.date().cast(pl.String))
    # b ends 2024-03-10; c's periods end 2024-02-05 (then a 40-day pause > gap_days) and 2024-05-16 (its two renewals merge);
    # a and d are still active: their last ends are at or after the as-of date (censored), never cancellations
    assert sorted(cancels.rows()) == [("b", "2024-03-10"), ("c", "2024-02-05"), ("c", "2024-05-16")]
    assert customers.filter(pl.col("customer_id") == "c")["signup_date"][0] == dt.date(2024, 1, 5)
    plan = events.filter(pl.col("event_type") == "plan_change")
    assert plan.rows() == [("d", dt.datetime(2024, 4, 1), "plan_change", 20.0)]   # the price rose by 20
    assert m.monthly_value == "mrr" and "mrr" in customers.columns and snaps.churn == "cancellation"
    assert any("right-censored" in p.problem for p in w) and any("came back" in p.problem for p in w)


def test_label_jump_is_reported():
    from trustml.features import FeatureRegistry, FeatureTable, Snapshots
    from trustml.mapping import label_warnings
    dates = [dt.date(2024, k, 1) for k in range(1, 9)]
    rates = [0.05] * 7 + [0.6]
    frame = pl.concat([pl.DataFrame({"customer_id": [f"c{i}" for i in range(100)], "snapshot_date": [d] * 100,
                                     "churned": pl.Series([1 if i < r * 100 else 0 for i in range(100)], dtype=pl.Int8)})
                       for d, r in zip(dates, rates, strict=True)])
    t = FeatureTable(frame, FeatureRegistry(()), Snapshots(), dt.datetime(2024, 10, 1))
    w = label_warnings(t)
    assert len(w) == 1 and "2024-08-01 is 60.0%" in w[0].problem
    assert not label_warnings(FeatureTable(frame.filter(pl.col("snapshot_date") < dates[-1]), FeatureRegistry(()), Snapshots(),
                                           dt.datetime(2024, 10, 1)))


def test_the_tuning_budget_can_be_set_in_the_mapping(tmp_path):
    import polars as pl

    from trustml.study import Study
    data = tmp_path / "d.csv"
    pl.DataFrame({"id": [f"c{i}" for i in range(200)], "y": ["Yes", "No", "No", "No"] * 50, "x": [i % 7 for i in range(200)]}).write_csv(data)
    m = tmp_path / "m.toml"
    m.write_text('kind = "flat"\n[columns]\nid = "id"\ntarget = "y"\npositive = ["Yes"]\nnegative = ["No"]\n[model]\ntrials = 3\n')
    assert Study.load(data, m).trials == 3
    assert Study.load(data, m, trials=0).trials == 0  # the command line or Python wins
    m.write_text('kind = "flat"\n[columns]\nid = "id"\ntarget = "y"\n[model]\ntrials = -1\n')
    with pytest.raises(ContractError, match="model.trials"):
        Study.load(data, m)


# -- flat tables have no snapshot date: nothing shows an invented 1970-01-01 ----------------------

def _dated_text(path) -> list[str]:
    """Dates a written file shows: any value of a date/datetime column of a parquet file, 1970 dates in other text."""
    import re
    if path.suffix == ".parquet":
        df = pl.read_parquet(path)
        return [str(v) for c, t in df.schema.items() if t == pl.Date or isinstance(t, pl.Datetime) for v in df[c].drop_nulls()]
    return re.findall(r"1970-\d\d-\d\d", path.read_text(errors="replace"))


def _flat_files(tmp_path, n=300, seed=3):
    r = np.random.default_rng(seed)
    tenure = r.integers(0, 60, n)
    y = r.random(n) < 1 / (1 + np.exp(0.06 * tenure - 0.5))
    data = tmp_path / "flat.csv"
    pl.DataFrame({"id": [f"{i:05d}" for i in range(n)], "tenure": tenure, "plan": r.choice(["basic", "pro"], n),
                  "tickets": r.poisson(2, n), "monthly": r.uniform(10, 90, n).round(2),
                  "left": np.where(y, "True", "False")}).write_csv(data)
    mapping = tmp_path / "m.toml"
    mapping.write_text('kind = "flat"\n[columns]\nid = "id"\ntarget = "left"\npositive = ["True"]\nnegative = ["False"]\n'
                       'monthly_value = "monthly"\n[pillars]\nservice_quality = ["tickets"]\naccount = ["tenure", "plan"]\n'
                       '[actionable]\nplan = ["basic", "pro"]\n')
    return data, mapping


def test_a_flat_table_shows_no_snapshot_date_on_the_command_line(tmp_path, capsys):
    from trustml.features import FeatureTable
    data, mapping = _flat_files(tmp_path)
    f, m, out = tmp_path / "f.parquet", tmp_path / "model", tmp_path / "out"
    out.mkdir()
    main(["features", "--data", str(data), "--mapping", str(mapping), "--out", str(f)])
    main(["train", "--features", str(f), "--out", str(m), "--trials", "0", "--quiet"])
    main(["evaluate", "--features", str(f), "--model", str(m), "--out", str(out / "metrics.csv")])
    main(["explain", "--features", str(f), "--model", str(m), "--out", str(out / "explanations.parquet"), "--quiet"])
    main(["playbook", "--features", str(f), "--model", str(m), "--out", str(out / "playbook.csv"), "--mapping", str(mapping)])
    main(["score", "--model", str(m), "--data", str(data), "--mapping", str(mapping), "--out", str(out / "scored.csv")])
    main(["score", "--model", str(m), "--data", str(data), "--mapping", str(mapping), "--out", str(out / "scored.parquet")])
    printed = capsys.readouterr().out
    table = FeatureTable.read(f)
    assert table.is_flat and table.as_of is None and table.frame["snapshot_date"].null_count() == table.frame.height
    assert table.latest().height == table.frame.height   # internal code that needs "the latest snapshot" still works
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".csv", ".json", ".parquet", ".txt")]
    assert len(files) >= 8
    dates = {str(p.relative_to(tmp_path)): d for p in files if (d := _dated_text(p))}
    assert dates == {}, dates
    assert "1970" not in printed
    assert pl.read_csv(out / "scored.csv")["snapshot_date"].null_count() == 300


def test_a_flat_study_shows_no_snapshot_date_in_summaries_tables_and_the_model_card(tmp_path):
    import json

    from trustml.explanations import explanations_frame, reason_codes
    from trustml.whatif import campaign, what_if
    data, mapping = _flat_files(tmp_path)
    study = Study.load(data, mapping, trials=0)
    shown = [study.summary(), json.dumps(study.model_card(), default=str), str(study.comparison), str(study.calibration),
             str(study.folds), str(study.pillars), str(reason_codes(study.trained, study.riskiest(5))),
             str(campaign(study.trained, study.latest, study.value(study.latest), top_n=5)),
             what_if(study.trained, study.riskiest(1), {"plan": "pro"}).summary(),
             str(explanations_frame(study.trained, study.test, study.explanation))]
    assert not [s for s in shown if "1970" in s]
    study.write(tmp_path / "results")
    files = [p for p in (tmp_path / "results").rglob("*") if p.is_file()]
    assert any(p.name == "features.parquet" for p in files)
    assert {str(p.name): d for p in files if p.suffix in (".csv", ".json", ".parquet") and (d := _dated_text(p))} == {}


# -- drafts that fit the file as it comes: a status with a third value, wide categories, directions, tenure ---------

def _telecom(n=400, seed=5):
    r = np.random.default_rng(seed)
    weeks = r.integers(1, 200, n)
    calls = r.poisson(1.5, n)
    y = r.random(n) < 1 / (1 + np.exp(-(-0.3 - 0.02 * weeks + 0.6 * calls)))
    status = np.where(y, "Churned", "Stayed").astype(object)
    status[::25] = "Unknown"
    return pl.DataFrame({"State": [f"S{k:02d}" for k in r.integers(0, 51, n)], "Tenure": weeks, "CustServCalls": calls,
                         "Status": status})


def test_draft_of_a_table_with_a_third_status_value_and_a_wide_category_runs_as_drafted():
    from trustml.mapping import draft_mapping
    df = _telecom()
    text = draft_mapping(df, "telecom.csv")
    m = Mapping.from_dict(tomllib.loads(text))
    assert (m.target, m.positive, m.negative, m.id) == ("Status", ("Churned",), ("Stayed",), None)
    assert m.rows == {"exclude": {"Status": ["Unknown"]}} and m.max_categories("State") == 51
    assert "CustServCalls" in m.pillars["service_quality"] and m.tenure == "Tenure"
    # directions are suggested from the file's own churn rates, commented out for the user to confirm
    assert "# CustServCalls = +1" in text and "# Tenure = -1" in text and not m.directions
    t = flat_table(df, m, source="telecom.csv")   # the draft runs unedited
    assert t.frame.height == 384 and "State" in t.registry.names and t.registry["State"].categorical


def test_tenure_is_a_flat_table_column_only():
    m = _flat({"columns": {"target": "Status", "positive": ["Churned"], "negative": ["Stayed"], "tenure": "Tenure"},
               "rows": {"exclude": {"Status": ["Unknown"]}}, "source": {"max_categories": 60}})
    t = flat_table(_telecom(), m)
    assert m.tenure == "Tenure" and "Tenure" in t.frame.columns
    with pytest.raises(ContractError, match="named in the mapping"):
        flat_table(_telecom().drop("Tenure"), m)
    with pytest.raises(ContractError, match="columns.tenure"):
        _events_mapping(columns={"id": "cid", "timestamp": "when", "event_type": "kind", "tenure": "t"})


def test_subscriptions_with_an_inactivity_definition_are_warned(tmp_path):
    from trustml.mapping import read_subscriptions
    m = _renewals(tmp_path)
    m = Mapping.from_dict({"kind": "events", "columns": {"id": "acct", "timestamp": "at", "event_type": "what"},
                           "subscriptions": m.subscriptions, "churn": {"as_of": "2024-07-01", "definition": "inactivity"}},
                          origin=m.origin)
    w = DataWarnings()
    subs, path = read_subscriptions(m, tmp_path / "log.csv")
    event_tables(read_data(tmp_path / "log.csv", m), m, source="log.csv", subscriptions=subs, subscriptions_source=str(path), warnings=w)
    assert any("subscription ends are not used" in p.problem for p in w)
