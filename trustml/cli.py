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
    from trustml.simulator import read_world
    customers, events = read_world(a.data)
    snaps = Snapshots(every=a.every, horizon=a.horizon, lead=a.lead, churn=a.churn)
    table = build_features(customers, events, snaps)
    table.write(a.out)
    print(f"wrote {table.frame.height:,} customer-snapshots x {len(table.registry)} features to {a.out}")
    for name, why in table.dropped.items():
        print(f"  left out {name}: {why}")


def _train(a):
    from trustml.features import FeatureTable
    from trustml.model import train
    table = FeatureTable.read(a.features)
    trained, split = train(table, calibration=None if a.calibration == "none" else a.calibration, monotone=a.monotone)
    trained.save(a.out)
    print(f"trained on {len(split.train)} snapshots ({split.train[0]} .. {split.train[-1]}), "
          f"{trained.model.n_iter_} trees; calibrated on {', '.join(map(str, split.calibrate))}; saved to {a.out}")


def _evaluate(a):
    import polars as pl

    from trustml.evaluate import compare_models
    from trustml.features import FeatureTable
    from trustml.model import TemporalSplit, TrainedModel
    table = FeatureTable.read(a.features)
    trained = TrainedModel.load(a.model)
    on = trained.metadata["trained_on"]
    dates = sorted(table.labelled()["snapshot_date"].unique().to_list())
    test = tuple(d for d in dates if str(d) in on["test_snapshots"])
    cal = tuple(d for d in dates if str(d) in on["calibration_snapshots"])
    train_dates = tuple(d for d in dates if on["snapshots"][0] <= str(d) <= on["snapshots"][1])
    comp = compare_models(table, TemporalSplit(train_dates, cal, test), trained)
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
    frame = table.frame if a.all else table.frame.filter(pl.col("snapshot_date") == table.frame["snapshot_date"].max())
    expl = explain(trained, frame, progress=not a.quiet)
    explanations_frame(trained, frame, expl).write_parquet(a.out)
    with pl.Config(tbl_hide_dataframe_shape=True):
        print(pillar_importance(expl, trained.registry).select("label", "mean_abs_shap", "share"))
    print(f"wrote {frame.height:,} explained rows to {a.out}")


def _report(a):
    from trustml.pipeline import run_simulated
    run_simulated(a.customers, a.months, a.seed, out=a.out, progress=not a.quiet, echo=print)
    print(f"\nresults, model and model card in {a.out}/")


def _lab(a):
    import subprocess
    nb = Path(a.notebooks)
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
    s.add_argument("--data", required=True, help="folder with customers.parquet and events.parquet")
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

    s = sub.add_parser("report", help="the main job: simulate, model, explain, economics; results in one folder")
    s.add_argument("--customers", type=int, default=20_000)
    s.add_argument("--months", type=int, default=24)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="out")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(run=_report)

    s = sub.add_parser("lab", help="open JupyterLab on the notebook suite")
    s.add_argument("--notebooks", default="notebooks")
    s.add_argument("--no-browser", action="store_true")
    s.set_defaults(run=_lab)
    return p


def main(argv: list[str] | None = None) -> None:
    from trustml.contract import ContractError
    from trustml.model import ModelMismatchError
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ContractError, ModelMismatchError, FileNotFoundError, ValueError) as e:
        sys.exit(f"trustml {args.command}: {e}")


if __name__ == "__main__":
    main()
