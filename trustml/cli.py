"""`trustml` command line: the whole pipeline outside notebooks (e.g. from a scheduler)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trustml.model import DEFAULT_TRIALS

__all__ = ["main"]


def _simulate(a):
    import json

    from trustml.simulator import simulate_to_dir
    out = simulate_to_dir(a.customers, a.months, a.seed, a.out, progress=not a.quiet)
    meta = json.loads((out / "world.json").read_text())
    print(f"wrote {meta['n_customers']:,} customers, {meta['n_events']:,} events and the truth to {a.target}")


def _features(a):
    from trustml.features import Snapshots, build_features
    if a.mapping:  # your own data: the mapping says what the columns mean (and how churn is defined)
        from trustml.study import Study
        table = Study.from_file(a.data, a.mapping).table
    else:
        from trustml.contract import validate
        from trustml.simulator import read_world
        customers, events = read_world(a.data)
        validate(customers, events)  # the contract holds on this path too: unknown customers, types, null timestamps
        snaps = Snapshots(every=a.every, horizon=a.horizon, lead=a.lead, churn=a.churn)
        if a.cluster:  # partitioned by customer on Dask; the same table as on one machine
            from trustml import distributed
            with distributed.features(a.data, snaps, cluster=a.cluster, partitions=a.partitions) as parts:
                table = parts.collect()
        else:
            table = build_features(customers, events, snaps)
    table.write(a.out)
    print(f"wrote {table.frame.height:,} rows x {len(table.registry)} features to {a.target}")
    for name, why in table.dropped.items():
        print(f"  left out {name}: {why}")


def _train(a):
    from trustml.features import FeatureTable
    from trustml.model import train
    table = FeatureTable.read(a.features)
    kwargs = dict(calibration=None if a.calibration == "none" else a.calibration, monotone=a.monotone, trials=a.trials,
                  leakage="refuse" if a.strict else "warn", progress=not a.quiet)
    if a.cluster:  # on one Dask worker, from a sample of whole customers (recorded in the model card)
        from trustml import distributed
        trained, split = distributed.train(table, cluster=a.cluster, sample=a.sample, **kwargs)
    else:
        trained, split = train(table, **kwargs)
    from trustml.leakage import describe_leaks
    for line in describe_leaks(trained.metadata["leakage"]):
        print(line)
    trained.save(a.out)
    from trustml.monitor import Reference
    from trustml.tracking import log_model
    test = split.frames(table.labelled())[2]
    Reference.fit(trained, test if table.is_flat else table.latest(), labelled=test if test.height else None).save(a.out)
    tuning = trained.metadata["tuning"]
    how = f"tuned by {len(tuning['trials'])} Optuna trials" if tuning else "untuned defaults"
    print(f"trained {trained.model.n_iter_} trees ({how}) on {trained.metadata['trained_on']['rows']:,} rows "
          f"({split.describe()['kind']} split); saved to {a.target}")
    print(f"  tracking: {log_model(trained, a.out).note}")


def _evaluate(a):
    import polars as pl

    from trustml.evaluate import compare_models
    from trustml.features import FeatureTable
    from trustml.model import TrainedModel, fingerprint, split_from_metadata
    table = FeatureTable.read(a.features)
    trained = TrainedModel.load(a.model)
    if fingerprint(table.frame) == trained.metadata["trained_on"]["fingerprint"]:
        split = split_from_metadata(table, trained.metadata["trained_on"])  # the training table: its held-out part
    else:  # a separate test file: every labelled row of it is scored
        from trustml.model import CustomerSplit
        split = CustomerSplit(test_size=1.0)
        print(f"{a.features}: not the table the model was trained on; scoring all {table.labelled().height:,} labelled rows "
              "(no training rows here, so no baselines)")
    comp = compare_models(table, split, trained)
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_width_chars=140):
        print(comp)
    if a.out:
        comp.write_csv(a.out)
        print(f"wrote {a.target}")


def _explain(a):
    import polars as pl

    from trustml.explanations import explain, explanations_frame, pillar_importance
    from trustml.features import FeatureTable
    from trustml.model import TrainedModel
    table = FeatureTable.read(a.features)
    trained = TrainedModel.load(a.model)
    frame = table.frame if a.all else table.latest()
    if a.cluster:
        from trustml import distributed
        expl = distributed.explain(trained, frame, cluster=a.cluster)
    else:
        expl = explain(trained, frame, progress=not a.quiet)
    explanations_frame(trained, frame, expl).write_parquet(a.out)
    with pl.Config(tbl_hide_dataframe_shape=True):
        print(pillar_importance(expl, trained.registry).select("label", "mean_abs_shap", "share"))
    print(f"wrote {frame.height:,} explained rows to {a.target}")


def _report(a):
    from trustml.report import run_report
    index = run_report(a.out, data=a.data, mapping=a.mapping, n_customers=a.customers, n_months=a.months, seed=a.seed,
                       notebooks=a.notebooks, progress=not a.quiet, trials=a.trials, jobs=a.jobs, cluster=a.cluster)
    print(f"report: {Path(a.target) / index.name} (HTML per notebook, model card, results/)")


def _playbook(a):
    from trustml.features import FeatureTable
    from trustml.mapping import value_of
    from trustml.model import TrainedModel
    from trustml.whatif import LeverCost, campaign, levers
    table = FeatureTable.read(a.features)
    trained = TrainedModel.load(a.model)
    latest = table.latest()
    if table.is_flat:  # every customer not marked as churned, each with a risk from a model that never saw them
        from trustml.model import out_of_fold, split_from_metadata
        latest = out_of_fold(table, trained, split_from_metadata(table, trained.metadata["trained_on"]))
    mapping = None
    if a.mapping:
        from trustml.mapping import load_mapping
        mapping = load_mapping(a.mapping)
    value, note = value_of(latest, mapping, float(table.labelled()["churned"].mean()))
    costs = {lv.name: LeverCost(a.cost) for lv in levers(trained.registry)}
    if a.cluster:
        from trustml import distributed
        plan = distributed.campaign(trained, latest, value, cluster=a.cluster, top_n=a.top, costs=costs)
    else:
        plan = campaign(trained, latest, value, top_n=a.top, costs=costs)
    (plan.write_parquet if a.out.endswith(".parquet") else plan.write_csv)(a.out)
    print(f"wrote the {plan.height} riskiest customers with their best action to {a.target}; {note}; cost per lever {a.cost:g}")


def _mapping(a):
    from trustml.mapping import draft_mapping, read_data
    text = draft_mapping(read_data(a.data), Path(a.data).name)
    if not a.out:
        print(text, end="")
        return
    Path(a.out).write_text(text)   # main() stages --out and moves it into place on success (refusing an existing one)
    out = getattr(a, "target", a.out)
    print(f"wrote a draft mapping for {Path(a.data).name} to {out}: check every guess, then "
          f"trustml features --data {a.data} --mapping {out} --out features.parquet")


def _score(a):
    from trustml.mapping import load_mapping, value_of
    from trustml.model import TrainedModel
    from trustml.monitor import REFERENCE_FILE, Reference, Thresholds, check_contract, drift, features_for, score
    from trustml.whatif import LeverCost, levers
    trained = TrainedModel.load(a.model)
    mapping = load_mapping(a.mapping) if a.mapping else None
    table = features_for(a.data, mapping)
    notes = check_contract(trained, table)   # refuses data whose features differ from the model's
    frame = table.frame
    ref = Reference.load(a.model) if (Path(a.model) / REFERENCE_FILE).exists() else None
    rate = ref.churn_rate if ref is not None and ref.churn_rate else float(trained.predict_risk(frame).mean())
    value, note = value_of(frame, mapping, rate)
    out = score(trained, frame, value=value, actions_top=a.top or None, real_ids=a.real_ids,
                costs={lv.name: LeverCost(a.cost) for lv in levers(trained.registry)})
    (out.write_parquet if a.out.endswith(".parquet") else out.write_csv)(a.out)
    ids = "REAL customer ids (--real-ids), column real_customer_id" if a.real_ids else "pseudonymised ids"
    day = frame["snapshot_date"].max()  # null for a flat table: no invented date
    print(f"scored {out.height:,} customers{f' at {day}' if day is not None else ''} with {a.model}: {getattr(a, 'target', a.out)} "
          f"({ids}); {note}")
    for n in notes:
        print(f"  note: {n}")
    if ref is not None:
        print(drift(ref, frame, trained, thresholds=Thresholds(psi_warn=a.psi_warn, psi_alarm=a.psi_alarm)).summary())
    else:
        print(f"  no {REFERENCE_FILE} beside the model: drift not checked")


def _survival(a):
    from trustml.contract import ContractError, Problem
    from trustml.outputs import check_target, staged
    from trustml.survival import CLVAssumptions, customers_now, fit_survival, survival_table, value_per_month
    bad = [Problem("command line", flag, what) for flag, ok, what in (
        ("--horizon", a.horizon >= 1, f"must be 1 month or more, got {a.horizon}"),
        ("--margin", 0 < a.margin <= 1, f"a share of the value per month, in (0, 1], got {a.margin:g}"),
        ("--discount", 0 <= a.discount < 1, f"an annual rate in [0, 1), got {a.discount:g}"),
        ("--mapping", bool(a.mapping) or not a.data, "--data needs --mapping (a TOML/YAML file, or telco / cdnow)")) if not ok]
    if bad:
        raise ContractError(bad)
    check_target(a.out, kind="dir", overwrite=a.overwrite)   # refuse an existing --out before the work, not after
    from trustml.study import Study
    study = Study.from_file(a.data, a.mapping) if a.data else Study.simulated(a.customers, a.months, a.seed)
    surv = fit_survival(study.table, a.horizon, tenure=study.mapping.tenure if study.mapping is not None else None, seed=a.seed)
    now = customers_now(study.table)
    if study.world is not None and "monthly_price" not in now.columns:   # the simulated customers' price
        now = now.join(study.world.customers.select("customer_id", "monthly_price"), on="customer_id", how="left", maintain_order="left")
    value, source = value_per_month(now, study.mapping)
    assumptions = CLVAssumptions(margin=a.margin, annual_discount=a.discount, tail=a.tail, value_source=source)
    table = survival_table(surv, now, value, assumptions)
    with staged(a.out, kind="dir", overwrite=a.overwrite) as tmp:
        table.write_parquet(tmp / "survival.parquet")
        table.write_csv(tmp / "survival.csv")
        surv.save(tmp / "model")
    print(f"wrote survival curves, expected months and CLV for {table.height:,} customers ({study.source['name']}; "
          f"pseudonymised ids) to {Path(a.out) / 'survival.parquet'} and survival.csv; the hazard model to {Path(a.out) / 'model'}")
    print(f"  hazard model: {surv.metadata['person_period_rows']:,} customer-months, {surv.metadata['events']:,} churns, "
          f"{surv.metadata['rounds']} trees; mean expected months within {surv.horizon}: {table['expected_months'].mean():.2f}; "
          f"mean CLV {assumptions.currency}{table['clv'].mean():,.2f}")
    print("  CLV assumptions:")
    for line in assumptions.lines(surv.horizon):
        print(f"    - {line}")


def _lab(a):
    import subprocess

    from trustml.report import suite_dir
    nb = Path(a.notebooks) if a.notebooks else suite_dir()
    if not nb.is_dir():
        sys.exit(f"trustml lab: no notebooks folder at {nb}")
    from trustml.explorer import LAB_LOW_LATENCY  # kernel messages reach the browser without a 40 ms delayed-ACK stall
    sys.exit(subprocess.call([sys.executable, "-m", "jupyterlab", f"--notebook-dir={nb}", LAB_LOW_LATENCY]
                             + (["--no-browser"] if a.no_browser else [])))


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
    s.add_argument("--calibration", default="auto", choices=["auto", "isotonic", "sigmoid", "none"],
                   help="auto (default): Platt scaling, or isotonic with enough churners; both keep the ranking")
    s.add_argument("--monotone", action="store_true", help="monotone constraints from the registry's directions")
    s.add_argument("--trials", type=int, default=DEFAULT_TRIALS, help=f"Optuna trials to tune LightGBM (default {DEFAULT_TRIALS}; 0: no search)")
    s.add_argument("--strict", action="store_true", help="refuse to train when a feature is suspected of leaking the label")
    s.add_argument("--quiet", action="store_true")
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
    s.add_argument("--data", help="your data file (CSV, text, parquet or Excel); default: the simulated trust world")
    s.add_argument("--mapping", help="mapping file (TOML/YAML) for --data, or a shipped one: telco, cdnow")
    s.add_argument("--customers", type=int, default=5000, help="simulated customers (default 5000)")
    s.add_argument("--months", type=int, default=24, help="simulated months (default 24)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="out")
    s.add_argument("--notebooks", help="notebook suite folder (default: the repository's notebooks/)")
    s.add_argument("--trials", type=int, default=DEFAULT_TRIALS, help=f"Optuna trials to tune LightGBM (default {DEFAULT_TRIALS})")
    s.add_argument("--jobs", type=int, default=2, help="work side by side (default 2): analysis stages in two threads, notebooks in two kernels")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(run=_report)

    s = sub.add_parser("playbook", help="the riskiest customers with the action of highest expected value, to CSV/parquet")
    s.add_argument("--features", required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--out", required=True, help="CSV, or parquet if the name ends in .parquet")
    s.add_argument("--top", type=int, default=100)
    s.add_argument("--cost", type=float, default=10.0, help="cost of pulling one lever for one customer (default 10)")
    s.add_argument("--mapping", help="the mapping the features were built with: its customer value column prices the actions")
    s.set_defaults(run=_playbook)

    s = sub.add_parser("mapping", help="draft a mapping (TOML) for your data file: id, target or timestamps, pillars, leaks")
    s.add_argument("data", help="your data file (CSV, parquet, Excel)")
    s.add_argument("--out", help="TOML file to write (default: print it)")
    s.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    s.set_defaults(run=_mapping)

    s = sub.add_parser("score", help="score new data with a saved model: risk, top reasons, best action; drift if a reference is saved")
    s.add_argument("--model", required=True, help="saved model folder (model.txt + model.json; reference.json for drift)")
    s.add_argument("--data", required=True, help="new data: a `trustml simulate` folder, or your file with --mapping")
    s.add_argument("--mapping", help="the mapping used in training (TOML/YAML, or telco / cdnow)")
    s.add_argument("--out", required=True, help="CSV, or parquet if the name ends in .parquet")
    s.add_argument("--real-ids", action="store_true", help="write real customer ids (column real_customer_id) instead of pseudonyms")
    s.add_argument("--top", type=int, default=100, help="search the best action for the N riskiest (0: everyone; default 100)")
    s.add_argument("--cost", type=float, default=10.0, help="cost of pulling one lever for one customer (default 10)")
    s.add_argument("--psi-warn", type=float, default=0.1, help="drift: PSI at which a feature or pillar is 'warn' (default 0.1)")
    s.add_argument("--psi-alarm", type=float, default=0.25, help="drift: PSI at which it is 'alarm' (default 0.25)")
    s.set_defaults(run=_score)

    s = sub.add_parser("survival", help="time to churn and lifetime value per customer: S(k), expected months, CLV, to parquet + CSV")
    s.add_argument("--data", help="your data file with --mapping; default: the simulated trust world")
    s.add_argument("--mapping", help="mapping (TOML/YAML, or telco / cdnow) for --data")
    s.add_argument("--customers", type=int, default=3000, help="simulated customers (default 3000)")
    s.add_argument("--months", type=int, default=18, help="simulated months (default 18)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="folder to write survival.parquet, survival.csv and model/ into (whole or not at all)")
    s.add_argument("--horizon", type=int, default=12, help="months of survival curve (default 12)")
    s.add_argument("--margin", type=float, default=0.6, help="CLV: margin on the value per month (default 0.6)")
    s.add_argument("--discount", type=float, default=0.10, help="CLV: annual discount rate (default 0.10)")
    s.add_argument("--tail", action=argparse.BooleanOptionalAction, default=True,
                   help="CLV: months beyond the horizon at the last month's hazard (an extrapolation; --no-tail: the horizon only)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out whole (default: refuse)")
    s.set_defaults(run=_survival)

    s = sub.add_parser("lab", help="open JupyterLab on the notebook suite")
    s.add_argument("--notebooks", help="folder (default: the repository's notebooks/)")
    s.add_argument("--no-browser", action="store_true")
    s.set_defaults(run=_lab)
    cluster = ("run on Dask (`pip install trustml[scale]`): 'local' (2 worker processes on this machine) or a scheduler "
               "address tcp://host:8786; data is partitioned by customer, results equal the single-machine run")
    for name in ("features", "train", "explain", "playbook", "report"):
        sub.choices[name].add_argument("--cluster", help=cluster)
    sub.choices["features"].add_argument("--partitions", type=int, help="with --cluster: customer partitions (default: two per worker thread)")
    sub.choices["train"].add_argument("--sample", type=float, default=1.0,
                                      help="with --cluster: share of whole customers (by id hash) to train on, on one worker")
    for name, cmd in sub.choices.items():  # every command that writes --out can replace it whole, when asked
        if name in OUT_KIND and not any("--overwrite" in act.option_strings for act in cmd._actions):
            cmd.add_argument("--overwrite", action="store_true", help="replace an existing --out whole (default: refuse)")
    return p


# what each command's --out is: written whole into a staging path, moved into place only on success
OUT_KIND = {"simulate": "dir", "features": "file", "train": "dir", "evaluate": "file", "explain": "file", "report": "dir",
            "playbook": "file", "score": "file", "mapping": "file"}


def main(argv: list[str] | None = None) -> None:
    """Run a command. A mistake in the input or the command line is one message and exit code 2 (nothing is
    written); Ctrl-C stops the run and leaves nothing (exit 130); a traceback means a bug in trustml."""
    from trustml.contract import ContractError
    from trustml.model import ModelMismatchError
    from trustml.outputs import staged
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command in OUT_KIND and getattr(args, "out", None):
            args.target = args.out
            with staged(args.out, kind=OUT_KIND[args.command], overwrite=args.overwrite) as tmp:
                args.out = str(tmp)
                args.run(args)
        else:
            args.run(args)
    except KeyboardInterrupt:
        print(f"trustml {args.command}: interrupted; nothing was written", file=sys.stderr)
        sys.exit(130)
    except (ContractError, ModelMismatchError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
            ValueError) as e:
        print(f"trustml {args.command}: {e}", file=sys.stderr)
        sys.exit(2)
    except RuntimeError as e:  # e.g. some report notebooks failed: a partial report is not written, the reasons are printed
        print(f"trustml {args.command}: {e}; nothing was written", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
