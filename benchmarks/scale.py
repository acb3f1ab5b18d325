"""Seconds and peak memory per stage, on one machine and (with --cluster) on Dask beside it.

    python benchmarks/scale.py --customers 20000 [--months 24] [--cluster local|tcp://host:8786]
                               [--stages simulate,features,train,explain,campaign,report]

Stages on one machine: simulate (to parquet), features (`build_features`), train (`train`, with
--trials Optuna trials; 0 = the fixed defaults with early stopping), explain (SHAP of the latest
snapshot), campaign (top 100 with the best action each), analysis (what `trustml report` computes once
before its notebooks, stage by stage through `Study`, with --report-trials), report (`trustml report
--customers N --trials T` as a subprocess, end to end). With --cluster the same stages run through `trustml.distributed` (the
simulated parquet is shared; report stays single-machine), and the train stage also measures the
alternatives: one worker on a 25% customer sample and `lightgbm.dask` (uncalibrated test ROC-AUC beside seconds).

Peak memory: the largest summed RSS of this process and all its children (Dask workers, the report
subprocess), sampled every 50 ms during the stage. It includes what earlier stages still hold.
Ends with one JSON line of every figure.
"""

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil

ALL = ("simulate", "features", "train", "explain", "campaign", "analysis", "report")
class Peak:
    """Largest RSS of this process tree while the `with` block runs (GiB)."""

    def __enter__(self):
        self.me, self.peak, self.stop = psutil.Process(), 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.perf_counter()
        self.thread.start()
        return self

    def _sample(self):
        total = 0
        for proc in [self.me, *self.me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        self.peak = max(self.peak, total)

    def _run(self):
        while not self.stop.is_set():
            self._sample()
            self.stop.wait(0.05)

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.stop.set()
        self.thread.join()
        self._sample()
        self.gib = self.peak / 2**30


results: dict[str, dict] = {}
a = stages = None


def record(engine: str, stage: str, peak: Peak, **extra):
    results.setdefault(engine, {})[stage] = {"seconds": round(peak.seconds, 2), "peak_gib": round(peak.gib, 3), **extra}
    more = "  ".join(f"{k}={v}" for k, v in extra.items())
    print(f"{engine:>7} {stage:<9} {peak.seconds:8.1f} s  {peak.gib:6.2f} GiB  {more}", flush=True)


def train_kwargs():
    import inspect

    from trustml.model import train
    params = inspect.signature(train).parameters
    return {**({"trials": a.trials} if "trials" in params else {}), **({"leakage": a.leakage} if "leakage" in params else {})}


def auc_on_test(trained, table, split):
    from sklearn.metrics import roc_auc_score
    _, _, test = split.frames(table.labelled())
    # uncalibrated: isotonic calibration adds ties that lower ROC-AUC a little, and lightgbm.dask is not calibrated here
    return round(float(roc_auc_score(test["churned"].to_numpy(), trained.predict_risk(test, calibrated=False))), 4)


def main():
    """Parse the flags, run the stages, print the figures (guarded: Dask's worker processes re-import this file)."""
    global a, stages
    p = argparse.ArgumentParser()
    p.add_argument("--customers", type=int, default=20_000)
    p.add_argument("--months", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cluster", help="'local' or a scheduler address: run the Dask pipeline beside the single-machine one")
    p.add_argument("--stages", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    p.add_argument("--trials", type=int, default=0, help="Optuna trials in the train stage (default 0: fixed defaults)")
    p.add_argument("--leakage", default="warn", choices=["warn", "refuse", "ignore"], help="train's leakage check (default warn, as in the report)")
    p.add_argument("--partitions", type=int, help="Dask partitions (default: two per worker thread)")
    p.add_argument("--report-timeout", type=float, default=3600.0, help="seconds before the report subprocess is stopped")
    p.add_argument("--report-trials", type=int, default=None, help="Optuna trials in the analysis and report stages (default: the report's)")
    a = p.parse_args()
    stages = [s.strip() for s in a.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(ALL))
    if unknown:
        sys.exit(f"unknown stage(s) {unknown}; choose from {ALL}")
    tmp = Path(tempfile.mkdtemp(prefix="trustml-scale-"))
    world = tmp / "world"
    print(f"trustml scale benchmark: {a.customers:,} customers x {a.months} months; stages {','.join(stages)}; "
          f"{os.cpu_count()} cores; cluster {a.cluster or '-'}", flush=True)
    try:
        from trustml.simulator import read_world, simulate_to_dir
        needs_world = any(s in stages for s in ("features", "train", "explain", "campaign"))
        if "simulate" in stages or needs_world:
            with Peak() as pk:
                simulate_to_dir(a.customers, a.months, a.seed, world)
            meta = json.loads((world / "world.json").read_text())
            if "simulate" in stages:
                record("single", "simulate", pk, events=meta["n_events"])

        table = trained = split = None
        if needs_world:
            from trustml.explanations import explain
            from trustml.features import Snapshots, build_features
            from trustml.model import train
            from trustml.whatif import campaign
            with Peak() as pk:
                customers, events = read_world(world)
                table = build_features(customers, events, Snapshots())
                del customers, events
            if "features" in stages:
                record("single", "features", pk, rows=table.frame.height)
            if any(s in stages for s in ("train", "explain", "campaign")):
                with Peak() as pk:
                    trained, split = train(table, **train_kwargs())
            if "train" in stages:
                record("single", "train", pk, trees=int(trained.model.n_iter_), test_auc=auc_on_test(trained, table, split))
            latest = table.latest()
            value = latest["monthly_price"].to_numpy() * 12
            if "explain" in stages:
                with Peak() as pk:
                    ex = explain(trained, latest)
                record("single", "explain", pk, rows=ex.values.shape[0])
            if "campaign" in stages:
                with Peak() as pk:
                    plan = campaign(trained, latest, value, top_n=100)
                record("single", "campaign", pk, rows=plan.height)

        if "analysis" in stages:
            from trustml.study import Study
            with Peak() as total:
                with Peak() as pk:
                    study = Study.load(n_customers=a.customers, n_months=a.months, seed=a.seed, trials=a.report_trials)
                    study.table  # noqa: B018 - simulate + features
                record("single", "a.data", pk, rows=study.table.frame.height)
                with Peak() as pk:
                    study.trained  # noqa: B018
                record("single", "a.train", pk, trials=study.trials, trees=int(study.trained.model.n_iter_))
                for name in ["comparison", "calibration", "folds", "explanation", "latest", "survival", "economics", "truth",
                             "whatif_truth", "causal_effects", "causal_truth", "causal_ablation", "survival_truth"]:
                    with Peak() as pk:
                        getattr(study, name)
                    record("single", f"a.{name}", pk)
                with Peak() as pk:
                    study.save(tmp / "artifacts")
                record("single", "a.save", pk)
                del study
            record("single", "analysis", total)

        if "report" in stages:
            out = tmp / "report"
            cmd = [str(Path(sys.executable).with_name("trustml")), "report", "--customers", str(a.customers), "--months", str(a.months),
                   "--out", str(out), "--quiet", *(["--trials", str(a.report_trials)] if a.report_trials is not None else [])]
            with Peak() as pk:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                try:
                    _, err = proc.communicate(timeout=a.report_timeout)
                    status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}: {err.strip().splitlines()[-1:]}"
                except subprocess.TimeoutExpired:
                    for child in psutil.Process(proc.pid).children(recursive=True):  # its notebook kernels too
                        child.kill()
                    proc.kill()
                    proc.communicate()
                    status = f"stopped after {a.report_timeout:g} s"
            record("single", "report", pk, status=status)

        if a.cluster and needs_world:
            from trustml import distributed
            client = distributed.connect(a.cluster)
            try:
                print(f"   dask: {len(client.scheduler_info(n_workers=-1)['workers'])} workers at {client.scheduler.address}", flush=True)
                with Peak() as pk:
                    parted = distributed.features(world, Snapshots(), cluster=client, partitions=a.partitions)
                    heights = parted.heights()
                if "features" in stages:
                    same = parted.collect().frame
                    diff = max((float((same[c] - table.frame[c]).abs().max() or 0.0) for c in table.registry.names
                                if table.frame[c].dtype == pl.Float64), default=0.0)
                    record("dask", "features", pk, rows=sum(heights), partitions=parted.n_partitions,
                           identical=same.equals(table.frame), max_abs_diff=diff)
                    del same
                if "train" in stages:
                    with Peak() as pk:
                        d_trained, d_split = distributed.train(parted, **train_kwargs())
                    record("dask", "train", pk, how="one worker, all customers", trees=int(d_trained.model.n_iter_),
                           test_auc=auc_on_test(d_trained, table, d_split),
                           same_model=d_trained.model.booster_.model_to_string() == trained.model.booster_.model_to_string())
                    with Peak() as pk:
                        s_trained, s_split = distributed.train(parted, sample=0.25, **train_kwargs())
                    record("dask", "train25", pk, how="one worker, 25% of customers", trees=int(s_trained.model.n_iter_),
                           test_auc=auc_on_test(s_trained, table, split))
                    # lightgbm.dask: data-parallel LightGBM across the workers, same parameters, the single run's number of trees
                    try:
                        import dask
                        import dask.array as da
                        import lightgbm as lgb

                        from trustml.model import TRAIN_DEFAULTS
                        tr, _, test = split.frames(table.labelled())
                        codes = trained.model  # categorical codes as the single-machine model coded them
                        # the rows the one-worker model fits on: early stopping holds out the latest 15% of training rows
                        order = np.argsort(tr["snapshot_date"].to_numpy(), kind="stable")
                        fit_rows = np.sort(order[:-max(1, int(round(trained.model.validation_fraction * tr.height)))])
                        tr = tr[fit_rows]
                        Xtr, ytr = codes.transform_matrix(tr.select(table.registry.names)), tr["churned"].to_numpy().astype(float)
                        n_w = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
                        chunks = np.array_split(np.arange(len(ytr)), n_w)
                        X = da.concatenate([da.from_delayed(dask.delayed(Xtr[c]), shape=(len(c), Xtr.shape[1]), dtype=float) for c in chunks])
                        y = da.concatenate([da.from_delayed(dask.delayed(ytr[c]), shape=(len(c),), dtype=float) for c in chunks])
                        params = {k: v for k, v in TRAIN_DEFAULTS.items() if k not in ("early_stopping", "n_estimators")}
                        with Peak() as pk:
                            clf = lgb.DaskLGBMClassifier(client=client, n_estimators=int(trained.model.n_iter_), subsample=0.8, subsample_freq=1,
                                                         reg_lambda=1.0, random_state=0, deterministic=True, force_row_wise=True, n_jobs=1,
                                                         verbose=-1, **params)
                            clf.fit(X, y)
                        from sklearn.metrics import roc_auc_score
                        p_test = clf.to_local().predict_proba(codes.transform_matrix(test.select(table.registry.names)))[:, 1]
                        record("dask", "lgb.dask", pk, how="lightgbm.dask, same fit rows and trees as the one-worker model", trees=int(trained.model.n_iter_),
                               test_auc=round(float(roc_auc_score(test["churned"].to_numpy(), p_test)), 4))
                    except Exception as e:  # noqa: BLE001 - a benchmark reports what failed and goes on
                        print(f"   lightgbm.dask failed: {type(e).__name__}: {e}", flush=True)
                        results.setdefault("dask", {})["lgb.dask"] = {"error": f"{type(e).__name__}: {e}"}
                if "explain" in stages:
                    with Peak() as pk:
                        d_ex = distributed.explain(trained, parted.latest())
                    record("dask", "explain", pk, rows=d_ex.values.shape[0], max_abs_diff=float(np.abs(d_ex.values - ex.values).max()))
                if "campaign" in stages:
                    with Peak() as pk:
                        d_plan = distributed.campaign(trained, parted.latest(), lambda f: f["monthly_price"].to_numpy() * 12, top_n=100)
                    record("dask", "campaign", pk, rows=d_plan.height, identical=d_plan.equals(plan))
            finally:
                client.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(json.dumps({"benchmark": "scale", "customers": a.customers, "months": a.months, "cluster": a.cluster, "stages": stages,
                      "trials": a.trials, "leakage": a.leakage, "cores": os.cpu_count(), "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "results": results}))


if __name__ == "__main__":
    main()
