import datetime as dt

import polars as pl
import pytest

from trustml.contract import ContractError, data_dictionary, validate


def good():
    customers = pl.DataFrame({"customer_id": ["a", "b"], "signup_date": [dt.date(2024, 1, 1), dt.date(2024, 2, 1)],
                              "plan": ["basic", "premium"], "monthly_price": [20.0, 90.0], "channel": ["organic", "paid"],
                              "referred_by": [None, "a"]})
    events = pl.DataFrame({"customer_id": ["a", "b", "a"],
                           "timestamp": [dt.datetime(2024, 1, 5), dt.datetime(2024, 2, 3), dt.datetime(2024, 3, 1)],
                           "event_type": ["ticket_opened", "promise_broken", "usage"], "value": [None, None, 12.0]})
    return customers, events


def test_valid_tables_pass():
    validate(*good(), as_of=dt.datetime(2024, 4, 1))


BROKEN = {
    "missing column": (lambda c, e: (c.drop("plan"), e), "customers", "plan", "required column is missing"),
    "misspelled column": (lambda c, e: (c.rename({"customer_id": "CustomerId"}), e), "customers", "customer_id", "did you mean 'CustomerId'"),
    "wrong type": (lambda c, e: (c.with_columns(monthly_price=pl.lit("twenty")), e), "customers", "monthly_price", "wrong type"),
    "null id": (lambda c, e: (c.with_columns(customer_id=pl.Series(["a", None])), e), "customers", "customer_id", "null values"),
    "duplicate id": (lambda c, e: (c.with_columns(customer_id=pl.lit("a")), e), "customers", "customer_id", "duplicate ids"),
    "negative price": (lambda c, e: (c.with_columns(monthly_price=pl.lit(-1.0)), e), "customers", "monthly_price", "negative price"),
    "nan price": (lambda c, e: (c.with_columns(monthly_price=pl.Series([float("nan"), 1.0])), e), "customers", "monthly_price", "NaN or infinite"),
    "inf value": (lambda c, e: (c, e.with_columns(value=pl.Series([None, float("inf"), 1.0]))), "events", "value", "NaN or infinite"),
    "unknown event": (lambda c, e: (c, e.with_columns(event_type=pl.Series(["ticket_opened", "teleport", "usage"]))), "events", "event_type", "unknown event type"),
    "event before signup": (lambda c, e: (c, e.with_columns(timestamp=pl.Series([dt.datetime(2023, 1, 1)] * 3))), "events", "timestamp", "before the customer's signup"),
    "unknown customer": (lambda c, e: (c, e.with_columns(customer_id=pl.Series(["a", "zzz", "a"]))), "events", "customer_id", "not in table 'customers'"),
    "after as-of": (lambda c, e: (c, e.with_columns(timestamp=pl.Series([dt.datetime(2024, 5, 1)] * 3))), "events", "timestamp", "at or after the as-of"),
    "empty events": (lambda c, e: (c, e.clear()), "events", None, "table is empty"),
    "timestamp as text": (lambda c, e: (c, e.with_columns(pl.col("timestamp").cast(pl.String))), "events", "timestamp", "wrong type"),
    "null timestamp": (lambda c, e: (c, e.with_columns(timestamp=pl.Series([None, dt.datetime(2024, 2, 3), None]))), "events", "timestamp", "null values"),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_each_broken_input_gets_its_specific_error(case):
    change, table, column, words = BROKEN[case]
    customers, events = good()
    c2, e2 = change(customers.clone(), events.clone())
    before = (c2.clone(), e2.clone())
    with pytest.raises(ContractError) as err:
        validate(c2, e2, as_of=dt.datetime(2024, 4, 1))
    hits = [p for p in err.value.problems if p.table == table and p.column == column and words in str(p)]
    assert hits, f"expected a problem on {table}.{column} mentioning {words!r}, got:\n{err.value}"
    assert c2.equals(before[0]) and e2.equals(before[1]), "the validator must never modify its input"


def test_every_problem_is_reported_at_once():
    customers, events = good()
    with pytest.raises(ContractError) as err:
        validate(customers.drop("plan").with_columns(customer_id=pl.lit("a")),
                 events.with_columns(event_type=pl.lit("teleport")))
    assert {(p.table, p.column) for p in err.value.problems} >= {("customers", "plan"), ("customers", "customer_id"),
                                                                   ("events", "event_type")}
    assert "e.g. 'teleport'" in str(err.value)


def test_user_event_types_mapped_to_pillars_are_accepted():
    customers, events = good()
    events = events.with_columns(event_type=pl.Series(["ticket_opened", "app_review", "usage"]))
    validate(customers, events, extra_event_types={"app_review": "advocacy"})


def test_data_dictionary_lists_both_tables():
    dd = data_dictionary()
    assert set(dd["table"]) == {"customers", "events"}
    assert "customer_id" in dd.filter(pl.col("table") == "events")["column"].to_list()
