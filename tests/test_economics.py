import numpy as np
import pytest

from trustml.economics import Assumptions, customer_value, retention_economics


def test_profit_curve_by_hand():
    econ = retention_economics(np.array([0.5, 0.1]), np.array([100.0, 100.0]), offer_cost=10, save_rate=0.5,
                               acquisition_multiple=2)
    # first: 0.5 * 0.5 * (100 + 20) - 10 = 20; second: 0.1 * 0.5 * 120 - 10 = -4
    assert econ.curve["expected_profit"].to_list() == pytest.approx([0, 20, 16])
    assert econ.best["customers_targeted"] == 1 and econ.best["risk_threshold"] == 0.5
    assert econ.plus_5pp == pytest.approx(0.05 * 2 * 120)
    assert "Assumptions" in econ.summary() and "5x" not in econ.summary()


def test_assumptions_are_printed_beside_figures():
    text = retention_economics(np.array([0.3]), np.array([50.0]), Assumptions(currency="EUR ")).summary()
    assert "offer cost per targeted customer: EUR 20.00" in text and "5x an offer" in text


def test_bad_input():
    with pytest.raises(ValueError, match="same length"):
        retention_economics(np.array([0.1, 0.2]), np.array([1.0]))
    with pytest.raises(ValueError, match="probabilities"):
        retention_economics(np.array([1.5]), np.array([1.0]))
    with pytest.raises(ValueError, match="monthly churn rate"):
        customer_value([10.0], 0.0)


def test_value_basis_is_said_and_the_old_call_still_works():
    risk, value = np.array([0.4, 0.1]), np.array([300.0, 900.0])
    flat = retention_economics(risk, value)
    assert flat.value_basis.startswith("value per period x a flat average lifetime")
    assert "CLV" not in flat.summary()
    clv = retention_economics(risk, value, value_basis="clv")
    assert "Value at stake per customer: CLV at stake" in clv.summary()
    assert clv.curve.equals(flat.curve)  # the same arithmetic: only what `value` means changes
    own = retention_economics(risk, value, Assumptions(offer_cost=5.0), value_basis="12-month revenue")
    assert "Value at stake per customer: 12-month revenue." in own.summary()
