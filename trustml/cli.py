"""`trustml` command line: the whole pipeline outside notebooks (e.g. from a scheduler)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _simulate(a):
    import json

    from trustml.simulator import simulate_to_dir
    out = simulate_to_dir(a.customers, a.months, a.seed, a.out, progress=not a.quiet)
    meta = json.loads((out / "world.json").read_text())
    print(f"wrote {meta['n_customers']:,} customers, {meta['n_events']:,} events and the truth to {out}")


def _features(a):
    from trustml.features import Snapshots, build_features
    if a.mapping:  # your own data: the mapping says what the columns mean (and how churn is defined)
        from trustml.study import Study
        table = Study.from_file(a.data, a.mapping).table
    else:
        from trustml.simulator import read_world
        customers, events = read_world(a.data)
        snaps = Snapshots(every=a.every, horizon=a.horizon, lead=a.lead, churn=a.churn)
        table = build_features(customers, events, snaps)
    table.write(a.out)
    print(f"wrote {table.frame.height:,} rows x {len(table.registry)} features to {a.out}")
    for name, why in table.dropped.items():
        print(f"  left out {name}: {why}")


def _train(a):
    from trustml.features import FeatureTable
    from trustml.model import train
    table = FeatureTable.read(a.features)
    trained, split = train(table, calibration=None if a.calibration == "none" else a.calibration, monotone=a.monotone)
    trained.save(a.out)
    print(f"trained {trained.model.n_iter_} trees on {trained.metadata['trained_on']['rows']:,} rows "
          f"({split.describe()}); saved to {a.out}")


def _evaluate(a):
    import polars as pl

    from trustml.evaluate import compare_models
    from trustml.features import FeatureTable
    from trustml.model import TrainedModel, split_from_metadata
    table = FeatureTable.read(a.features)
    trained = TrainedModel.load(a.model)
    comp = compare_models(table, split_from_metadata(table, trained.metadata["trained_on"]), trained)
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_width_chars=140):
        print(comp)
    if a.out:
        comp.write_csv(a.out)
        print(f"wrote {a.out}")


def _explain(a):
    import polars as pl

    from trustml.explanations import explain, explanations_frame, pillar_importance
    from trustml.features import FeatureTable
    from trustml.model import TrainedModel
    table = FeatureTable.read(a.features)
    trained = TrainedModel.load(a.model)
    frame = table.frame if a.all else table.latest()
    expl = explain(trained, frame, progress=not a.quiet)
    explanations_frame(trained, frame, expl).write_parquet(a.out)
    with pl.Config(tbl_hide_dataframe_shape=True):
        print(pillar_importance(expl, trained.registry).select("label", "mean_abs_shap", "share"))
    print(f"wrote {frame.height:,} explained rows to {a.out}")


def _report(a):
    from trustml.report import run_report
    index = run_report(a.out, data=a.data, mapping=a.mapping, n_customers=a.customers, n_months=a.months, seed=a.seed,
                       notebooks=a.notebooks, progress=not a.quiet)
    print(f"report: {index} (HTML per notebook, model card, results/)")


def _playbook(a):
    from trustml.features import FeatureTable
    from trustml.mapping import value_of
    from trustml.model import TrainedModel
    from trustml.whatif import LeverCost, campaign, levers
    table = FeatureTable.read(a.features)
    trained = TrainedModel.load(a.model)
    latest = table.latest()
    value, note = value_of(latest, None, float(table.labelled()["churned"].mean()))
    plan = campaign(trained, latest, value, top_n=a.top, costs={lv.name: LeverCost(a.cost) for lv in levers(trained.registry)})
    (plan.write_parquet if a.out.endswith(".parquet") else plan.write_csv)(a.out)
    print(f"wrote the {plan.height} riskiest customers with their best action to {a.out}; {note}; cost per lever {a.cost:g}")


def _lab(a):
    import subprocess

    from trustml.report import suite_dir
    nb = Path(a.notebooks) if a.notebooks else suite_dir()
    if not nb.is_dir():
        sys.exit(f"trustml lab: no notebooks folder at {nb}")
    sys.exit(subprocess.call([sys.executable, "-m", "jupyterlab", f"--notebook-dir={nb}"] + (["--no-browser"] if a.no_browser else [])))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trustml", description="Churn and retention prediction organised by customer-trust pillars.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="simulate a trust world and write its tables and truth as parquet")
    s.add_argument("--customers", type=int, default=20_000)
    s.add_argument("--months", type=int, default=24)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="folder to write customers/events/truth parquet into")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(run=_simulate)

    s = sub.add_parser("features", help="build point-in-time snapshots, labels and features")
    s.add_argument("--data", required=True, help="folder written by `trustml simulate`, or your file with --mapping")
    s.add_argument("--mapping", help="mapping (TOML/YAML, or telco / cdnow) for your own --data file")
    s.add_argument("--out", required=True, help="feature table parquet to write (plus a .json sidecar)")
    s.add_argument("--every", default="1mo", help="time between snapshots (polars duration, default 1mo)")
    s.add_argument("--horizon", default="1mo", help="label window after the snapshot (default 1mo)")
    s.add_argument("--lead", default="0d", help="gap between snapshot and label window (default 0d)")
    s.add_argument("--churn", default="cancellation", choices=["cancellation", "inactivity"])
    s.set_defaults(run=_features)

    s = sub.add_parser("train", help="train the LightGBM churn model on a feature table")
    s.add_argument("--features", required=True)
    s.add_argument("--out", required=True, help="model folder (model.txt + model.json; no pickle)")
    s.add_argument("--calibration", default="isotonic", choices=["isotonic", "sigmoid", "none"])
    s.add_argument("--monotone", action="store_true", help="monotone constraints from the registry's directions")
    s.set_defaults(run=_train)

    s = sub.add_parser("evaluate", help="test metrics of a saved model beside baselines")
    s.add_argument("--features", required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--out", help="CSV to write the metrics to")
    s.set_defaults(run=_evaluate)

    s = sub.add_parser("explain", help="SHAP explanations per customer, summed per trust pillar, to parquet")
    s.add_argument("--features", required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--all", action="store_true", help="explain every snapshot, not only the latest")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(run=_explain)

    s = sub.add_parser("report", help="the main job: run the notebook suite on the data; HTML reports, model card, results")
    s.add_argument("--data", help="your data file (CSV, text or parquet); default: the simulated trust world")
    s.add_argument("--mapping", help="mapping file (TOML/YAML) for --data, or a shipped one: telco, cdnow")
    s.add_argument("--customers", type=int, default=5000, help="simulated customers (default 5000)")
    s.add_argument("--months", type=int, default=24, help="simulated months (default 24)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="out")
    s.add_argument("--notebooks", help="notebook suite folder (default: the repository's notebooks/)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(run=_report)

    s = sub.add_parser("playbook", help="the riskiest customers with the action of highest expected value, to CSV/parquet")
    s.add_argument("--features", required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--out", required=True, help="CSV, or parquet if the name ends in .parquet")
    s.add_argument("--top", type=int, default=100)
    s.add_argument("--cost", type=float, default=10.0, help="cost of pulling one lever for one customer (default 10)")
    s.set_defaults(run=_playbook)

    s = sub.add_parser("lab", help="open JupyterLab on the notebook suite")
    s.add_argument("--notebooks", help="folder (default: the repository's notebooks/)")
    s.add_argument("--no-browser", action="store_true")
    s.set_defaults(run=_lab)
    return p


def main(argv: list[str] | None = None) -> None:
    from trustml.contract import ContractError
    from trustml.model import ModelMismatchError
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ContractError, ModelMismatchError, FileNotFoundError, ValueError, RuntimeError) as e:
        sys.exit(f"trustml {args.command}: {e}")


if __name__ == "__main__":
    main()
