"""The main job, end to end: simulate (or read) -> validate -> features -> model -> evaluation ->
explanations -> economics, written to one output folder and summarised on the terminal.

Examples
--------
>>> result = run_simulated(n_customers=1500, n_months=15, seed=0, out=None, truth_checks=False)
>>> sorted(result)[:3]
['comparison', 'economics', 'explanation']
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from trustml.contract import validate
from trustml.economics import customer_value, retention_economics
from trustml.evaluate import compare_models
from trustml.explanations import explain, explanations_frame, pillar_importance, truthfulness
from trustml.features import Snapshots, build_features
from trustml.model import train
from trustml.simulator import simulate

__all__ = ["run_simulated", "model_card"]


def run_simulated(n_customers: int = 20_000, n_months: int = 24, seed: int = 0, *, out: str | Path | None = "out",
                  truth_checks: bool = True, progress: bool = False, echo=None) -> dict:
    """Run the whole pipeline on the simulated trust world; write results under `out` if given."""
    say = echo or (lambda *_: None)
    steps = ["simulate", "validate", "features", "train", "evaluate", "explain", "economics"]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(steps), desc="trustml", unit="step")

    def step(name):
        if bar is not None:
            bar.set_postfix_str(name)
            bar.update(1)

    world = simulate(n_customers, n_months, seed)
    step("simulate")
    validate(world.customers, world.events, as_of=world.as_of)
    step("validate")
    table = build_features(world.customers, world.events, Snapshots(), as_of=world.as_of)
    step("features")
    trained, split = train(table)
    step("train")
    _, _, test = split.frames(table.labelled())
    oracle = test.select("customer_id", pl.col("snapshot_date").alias("month_start")).join(
        world.truth, on=["customer_id", "month_start"], how="left", maintain_order="left")["churn_prob"].to_numpy()
    comparison = compare_models(table, split, trained, oracle=oracle)
    step("evaluate")
    expl = explain(trained, test)
    pillars = pillar_importance(expl, trained.registry)
    truth = truthfulness(trained, test, world.truth, n_customers=n_customers, n_months=n_months, seed=seed, expl=expl) if truth_checks else None
    step("explain")
    latest = table.frame.filter(pl.col("snapshot_date") == table.frame["snapshot_date"].max())
    monthly_churn = float(table.labelled()["churned"].mean())
    econ = retention_economics(trained.predict_risk(latest), customer_value(latest["monthly_price"].to_numpy(), monthly_churn))
    step("economics")
    if bar is not None:
        bar.close()
    result = {"world": world, "features": table, "trained": trained, "split": split, "comparison": comparison,
              "pillars": pillars, "truth": truth, "economics": econ, "explanation": expl, "test": test}
    if out is not None:
        _write(Path(out), result)
    say(_summary(result))
    return result


def model_card(result: dict) -> dict:
    table, trained, comp = result["features"], result["trained"], result["comparison"]
    reg = trained.registry
    card = {
        "model": "LightGBM churn classifier (trustml.ChurnModel), isotonic calibration on later snapshots",
        "data": {"source": "trustml trust-world simulator", "seed": result["world"].seed,
                 "customers": result["world"].customers.height, "events": result["world"].events.height,
                 "fingerprint": trained.metadata["trained_on"]["fingerprint"], "rows": table.frame.height,
                 "snapshots": f"every {table.snapshots.every}, label = cancellation within {table.snapshots.horizon}"},
        "split": trained.metadata["trained_on"],
        "features": [{"name": f.name, "pillar": f.pillar, "actionable": f.actionable} for f in reg],
        "pillars": reg.pillars,
        "metrics": comp.to_dicts(),
        "pillar_importance": result["pillars"].select("pillar", "mean_abs_shap", "share").to_dicts(),
        "limitations": [
            "Trained and tested on simulated data: real customers differ; re-train and re-check on your own.",
            "Ticket counts are confounded with usage (heavy users open more tickets): read them as context, not as a lever.",
            "Explanations describe the model, not causes; the simulator's truth check is what says how far to trust them.",
        ],
        "privacy": "Ids in every output are pseudonymised (salted SHA-256); no personal data is printed.",
    }
    if result.get("truth"):
        card["truthfulness"] = {"spearman_pillars": result["truth"]["spearman"], "lever_agreement_top200": result["truth"]["agreement"]}
    return card


def _write(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result["features"].write(out / "features.parquet")
    result["trained"].save(out / "model")
    result["comparison"].write_csv(out / "metrics.csv")
    result["pillars"].write_csv(out / "pillar_importance.csv")
    explanations_frame(result["trained"], result["test"], result["explanation"]).write_parquet(out / "explanations.parquet")
    result["economics"].curve.write_csv(out / "profit_curve.csv")
    (out / "model_card.json").write_text(json.dumps(model_card(result), indent=2, default=str))


def _summary(result: dict) -> str:
    w, comp, econ = result["world"], result["comparison"], result["economics"]
    lines = [f"Simulated {w.customers.height:,} customers over {w.n_months} months: {w.events.height:,} events (seed {w.seed}).",
             f"Feature table: {result['features'].frame.height:,} customer-snapshots x {len(result['features'].registry)} features.",
             "", "Test metrics (latest snapshots, never seen in training):"]
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, tbl_width_chars=120, tbl_rows=20):
        lines.append(str(comp.select("model", "roc_auc", "pr_auc", "brier", "top_decile_lift")))
        lines += ["", "What drives churn risk, by trust pillar (mean |SHAP|, log-odds):",
                  str(result["pillars"].select("label", pl.col("mean_abs_shap").round(3), pl.col("share").round(3)))]
    if result.get("truth"):
        t = result["truth"]
        lines += ["", f"Explanations vs the simulator's truth: Spearman {t['spearman']:.3f} across pillars; "
                      f"top lever agrees for {t['agreement']:.0%} of the 200 riskiest customers."]
    lines += ["", econ.summary()]
    return "\n".join(lines)
