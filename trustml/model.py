"""The LightGBM churn model: a scikit-learn estimator, calibration on later data, safe persistence.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(400, 3)); y = (X[:, 0] + rng.normal(size=400) > 1).astype(int)
>>> model = ChurnModel(n_estimators=50).fit(X, y)
>>> model.predict_proba(X[:2]).shape
(2, 2)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_array, check_consistent_length, check_is_fitted, column_or_1d, validate_data

from trustml.features import FeatureRegistry, FeatureTable

__all__ = ["ChurnModel", "Calibrator", "TrainedModel", "TemporalSplit", "CustomerSplit", "temporal_split", "train", "tune", "out_of_fold",
           "Tuning", "fingerprint", "ModelMismatchError"]

FORMAT_VERSION = 2


class ModelMismatchError(ValueError):
    """The data given to a saved model does not have the features it was trained on."""


class ChurnModel(ClassifierMixin, BaseEstimator):
    """Gradient-boosted churn classifier (LightGBM), deterministic and scikit-learn compatible.

    Accepts numpy arrays or polars frames; string/categorical polars columns become LightGBM
    native categoricals. Early stopping uses a *time-ordered* validation split: the latest
    `validation_fraction` of rows by `time` (passed to `fit`), or the last rows if no time is given.

    Parameters
    ----------
    early_stopping : 'auto' (on when n_samples > 10,000), True or False.
    monotone_constraints : per-feature -1/0/+1 (e.g. `registry.monotone_constraints()`), or None.
    linear_base : boost from a logistic regression on the numeric features (LightGBM's init score) instead of a
        constant: trees then model what the linear part misses. A linear part extrapolates where trees cannot
        (values beyond the training range, as when later snapshots have longer tenure than any training row);
        tuning chooses it per data set. Its SHAP values are exact (coefficient x (value - training mean)).
    n_jobs : threads; fixed (not 'all cores') so results do not depend on the machine. One by default:
        as fast on churn-sized tables, and two processes each spinning two OpenMP threads on two
        cores (pytest-xdist, notebooks side by side) made training 20-35x slower when measured.
    """

    def __init__(self, n_estimators=500, learning_rate=0.05, num_leaves=31, min_child_samples=40,
                 subsample=0.8, colsample_bytree=0.8, reg_lambda=1.0, early_stopping="auto",
                 early_stopping_rounds=50, validation_fraction=0.15, monotone_constraints=None,
                 linear_base=False, random_state=0, n_jobs=1):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.early_stopping = early_stopping
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.monotone_constraints = monotone_constraints
        self.linear_base = linear_base
        self.random_state = random_state
        self.n_jobs = n_jobs

    # -- input ---------------------------------------------------------------------------
    def _matrix(self, X, *, fit: bool) -> np.ndarray:
        if isinstance(X, pl.LazyFrame):
            X = X.collect()
        if isinstance(X, pl.DataFrame):
            if fit:
                self.feature_names_in_ = np.array(X.columns, dtype=object)
                self.n_features_in_ = X.width
                self.categories_ = {c: sorted(X[c].cast(pl.String).drop_nulls().unique().to_list())
                                    for c, t in X.schema.items() if t in (pl.String, pl.Categorical) or isinstance(t, pl.Enum)}
            else:
                names = list(getattr(self, "feature_names_in_", []))
                if list(X.columns) != names:
                    missing = [c for c in names if c not in X.columns]
                    extra = [c for c in X.columns if c not in names]
                    raise ModelMismatchError(f"features differ from training: missing {missing}, unexpected {extra}"
                                             if missing or extra else "features are in a different order than in training")
            cols = []
            for c in X.columns:
                if c in self.categories_:
                    codes = X[c].cast(pl.String).replace_strict(self.categories_[c], list(range(len(self.categories_[c]))),
                                                                default=None, return_dtype=pl.Float64)
                    cols.append(codes.to_numpy())
                else:
                    cols.append(X[c].cast(pl.Float64).to_numpy())
            return np.column_stack(cols) if cols else np.empty((X.height, 0))
        return validate_data(self, X, ensure_all_finite="allow-nan", reset=False)

    def _params(self) -> dict:
        params = dict(objective="binary", learning_rate=self.learning_rate, num_leaves=self.num_leaves,
                      min_data_in_leaf=self.min_child_samples, bagging_fraction=self.subsample,
                      bagging_freq=1 if self.subsample < 1 else 0, feature_fraction=self.colsample_bytree,
                      lambda_l2=self.reg_lambda, seed=self.random_state, deterministic=True, force_row_wise=True,
                      num_threads=self.n_jobs, verbosity=-1)
        if self.monotone_constraints is not None:
            params["monotone_constraints"] = list(self.monotone_constraints)
            params["monotone_constraints_method"] = "advanced"
        return params

    def fit(self, X, y, *, time=None):
        if y is None:
            raise ValueError("requires y to be passed, but the target y is None")
        if isinstance(X, pl.DataFrame | pl.LazyFrame):
            Xm = self._matrix(X, fit=True)
            y = check_array(y.to_numpy() if isinstance(y, pl.Series) else y, ensure_2d=False, dtype=None, input_name="y")
            y = column_or_1d(y, warn=True)
            check_consistent_length(Xm, y)
        else:
            self.categories_ = {}
            Xm, y = validate_data(self, X, y, ensure_all_finite="allow-nan")
        check_classification_targets(y)
        if type_of_target(y) not in ("binary", "unary"):
            raise ValueError(f"Only binary classification is supported. The type of the target is {type_of_target(y)}.")
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"the target has one class only ({self.classes_[0]!r}): nothing to learn")
        yb = (y == self.classes_[1]).astype(float)
        if self.monotone_constraints is not None and self.linear_base:
            raise ValueError("linear_base=True cannot keep monotone constraints: choose one")
        if self.monotone_constraints is not None and len(self.monotone_constraints) != Xm.shape[1]:
            raise ValueError(f"monotone_constraints has {len(self.monotone_constraints)} entries for {Xm.shape[1]} features")
        stop = self.early_stopping if self.early_stopping != "auto" else len(yb) > 10_000
        cat = [i for i, c in enumerate(getattr(self, "feature_names_in_", [])) if c in self.categories_]
        self.linear_ = fit_linear_base(Xm, yb, cat) if self.linear_base else None
        init = self._linear_score(Xm)
        params = self._params()
        if stop:
            order = np.argsort(np.asarray(time), kind="stable") if time is not None else np.arange(len(yb))
            n_val = max(1, int(round(self.validation_fraction * len(yb))))
            tr, va = order[:-n_val], order[-n_val:]
            dtrain = lgb.Dataset(Xm[tr], yb[tr], categorical_feature=cat, free_raw_data=False, init_score=_part(init, tr))
            dvalid = lgb.Dataset(Xm[va], yb[va], reference=dtrain, init_score=_part(init, va))
            self.booster_ = lgb.train(params, dtrain, self.n_estimators, valid_sets=[dvalid],
                                      callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)])
            self.n_iter_ = self.booster_.best_iteration or self.n_estimators
        else:
            self.booster_ = lgb.train(params, lgb.Dataset(Xm, yb, categorical_feature=cat, init_score=init), self.n_estimators)
            self.n_iter_ = self.n_estimators
        return self

    def _linear_score(self, Xm: np.ndarray) -> np.ndarray | None:
        return None if getattr(self, "linear_", None) is None else linear_score(self.linear_, Xm)

    def linear_contributions(self, Xm: np.ndarray) -> tuple[np.ndarray, float]:
        """Exact SHAP values of the linear base (coefficient x (value - training mean)) and its expected value."""
        lin = getattr(self, "linear_", None)
        if lin is None:
            return np.zeros(Xm.shape), 0.0
        D, owner = _linear_design(lin, Xm)
        coef, mean = np.asarray(lin["coef"]), np.asarray(lin["mean"])
        out = np.zeros(Xm.shape)
        np.add.at(out.T, owner, ((D - mean) * coef).T)   # a categorical column's value: the sum over its levels
        return out, float(lin["intercept"] + coef @ mean)

    def decision_function(self, X) -> np.ndarray:
        """Raw log-odds of churn (what the SHAP values add up to): the linear base, if any, plus the trees."""
        check_is_fitted(self, "booster_")
        Xm = self._matrix(X, fit=False)
        raw = self.booster_.predict(Xm, raw_score=True, num_iteration=self.n_iter_)
        lin = self._linear_score(Xm)
        return raw if lin is None else raw + lin

    def predict_proba(self, X) -> np.ndarray:
        p = expit(self.decision_function(X))
        return np.column_stack([1 - p, p])

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        return self.classes_[(scores > 0).astype(int)]

    def transform_matrix(self, X) -> np.ndarray:
        """The numeric matrix LightGBM sees (categoricals as codes): what SHAP explains."""
        check_is_fitted(self, "booster_")
        return self._matrix(X, fit=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.classifier_tags.multi_class = False
        return tags


def _part(a: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    return None if a is None else a[idx]


def _filled(X: np.ndarray, fill) -> np.ndarray:
    return np.where(np.isnan(X), np.asarray(fill, dtype=float), X)


def fit_linear_base(Xm: np.ndarray, y: np.ndarray, categorical: list[int]) -> dict:
    """A ridge-penalised logistic regression, as plain JSON-ready lists: the linear base that trees boost from
    (see `ChurnModel(linear_base=True)`). Numeric columns enter as they are (missing values -> training median),
    each categorical column as one indicator per level seen in training (a missing or unseen level: none).

    >>> X = np.array([[0.0, 0], [1.0, 1], [2.0, 2], [np.nan, 1], [3.0, 0], [1.5, 2]])
    >>> lin = fit_linear_base(X, np.array([0, 1, 1, 0, 1, 0]), categorical=[1])
    >>> lin["columns"], lin["onehot"], len(lin["coef"])
    ([0], [[1, 3]], 4)
    """
    cat = set(categorical)
    cols = [j for j in range(Xm.shape[1]) if j not in cat]
    X = Xm[:, cols]
    with np.errstate(all="ignore"):
        fill = np.nan_to_num(np.nanmedian(X, axis=0)) if X.size else np.zeros(0)
    onehot = []
    for j in sorted(cat):
        codes = Xm[:, j][~np.isnan(Xm[:, j])]
        if codes.size:
            onehot.append([j, int(codes.max()) + 1])
    lin = {"columns": cols, "fill": fill.tolist(), "onehot": onehot}
    D, _ = _linear_design(lin, Xm)
    mean, sd = D.mean(axis=0), D.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    lr = LogisticRegression(C=1.0, max_iter=2000).fit((D - mean) / sd, y)
    coef = lr.coef_[0] / sd
    return {**lin, "mean": mean.tolist(), "coef": coef.tolist(), "intercept": float(lr.intercept_[0] - coef @ mean)}


def _linear_design(lin: dict, Xm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The linear base's inputs (numeric columns filled, then one indicator per categorical level) and, per
    input, the column of `Xm` it comes from (a level's SHAP value belongs to its column)."""
    parts = [_filled(Xm[:, np.asarray(lin["columns"], dtype=int)], lin["fill"])]
    owner = list(lin["columns"])
    for j, levels in lin.get("onehot", []):   # models saved before categoricals entered the base have none
        parts.append((Xm[:, [j]] == np.arange(levels)[None, :]).astype(float))
        owner += [j] * levels
    return np.column_stack(parts), np.asarray(owner, dtype=int)


def linear_score(lin: dict, Xm: np.ndarray) -> np.ndarray:
    return lin["intercept"] + _linear_design(lin, Xm)[0] @ np.asarray(lin["coef"])


# Platt scaling needs two parameters; an isotonic step function needs many churners per step, or it
# collapses distinct scores into a few ties (27 churners once turned 2,256 scores into 47).
ISOTONIC_MIN_CHURNERS = 1000
_EPS = 1e-4  # calibrated risks stay inside (0, 1): no customer is "certainly" staying or leaving


@dataclass
class Calibrator:
    """Maps model probabilities to calibrated ones, fitted on data later in time than training.

    Every method keeps the model's ranking exactly (strictly increasing) and never returns 0 or 1:

    * ``"sigmoid"``: Platt scaling on the log-odds (two parameters; robust with few churners);
    * ``"isotonic"``: isotonic regression, its steps tie-broken by Platt scaling with weight 0.001
      (distinct scores stay distinct; values move by at most 0.001 from the isotonic fit);
    * ``"auto"``: isotonic when the calibration data has at least `ISOTONIC_MIN_CHURNERS` churners,
      else sigmoid; `fit` records the method it chose in `method_` and why in `reason_`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(0.01, 0.6, 2000); y = (rng.uniform(size=2000) < p / 2).astype(int)
    >>> cal = Calibrator("auto").fit(p, y)
    >>> cal.method_, bool(np.all(np.diff(cal.predict(np.sort(p))) > 0))
    ('sigmoid', True)
    """

    method: str = "auto"

    def fit(self, p: np.ndarray, y: np.ndarray) -> Calibrator:
        if self.method not in ("auto", "sigmoid", "isotonic"):
            raise ValueError(f"calibration method must be 'auto', 'sigmoid' or 'isotonic', got {self.method!r}")
        p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=int)
        churners = int(y.sum())
        self.method_ = self.method
        if self.method == "auto":
            self.method_ = "isotonic" if churners >= ISOTONIC_MIN_CHURNERS else "sigmoid"
        self.reason_ = (f"{churners:,} churners in the calibration data "
                        f"({'at least' if churners >= ISOTONIC_MIN_CHURNERS else 'fewer than'} {ISOTONIC_MIN_CHURNERS:,} "
                        f"for isotonic steps)" + ("" if self.method == "auto" else f"; method '{self.method}' chosen by the user"))
        lr = LogisticRegression(C=1e6).fit(_logit(p)[:, None], y)
        self.platt_ = (float(lr.coef_[0, 0]), float(lr.intercept_[0]))
        self.iso_ = None
        if self.platt_[0] <= 0:  # no ranking signal left on later data: keep the model's order and scale, say so
            self.method_, self.platt_ = "none", (1.0, 0.0)
            self.reason_ = (f"the model does not rank the calibration data ({churners:,} churners; Platt slope <= 0): "
                            "left uncalibrated; retrain on more recent data")
            return self
        if self.method_ == "isotonic":
            self.iso_ = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
        return self

    def predict(self, p: np.ndarray) -> np.ndarray:
        a, b = self.platt_
        platt = expit(a * _logit(np.asarray(p, dtype=float)) + b)
        out = platt if self.iso_ is None else 0.999 * self.iso_.predict(p) + 0.001 * platt
        return _EPS + (1 - 2 * _EPS) * out  # strictly inside (0, 1), order kept (a clip would tie the extremes)

    def to_dict(self) -> dict:
        d = {"method": self.method, "chosen": self.method_, "reason": self.reason_, "platt": list(self.platt_)}
        if self.iso_ is not None:
            d.update(x=self.iso_.X_thresholds_.tolist(), y=self.iso_.y_thresholds_.tolist())
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Calibrator:
        cal = cls(d["method"])
        cal.method_, cal.reason_, cal.platt_ = d["chosen"], d["reason"], tuple(d["platt"])
        cal.iso_ = None
        if "x" in d:
            # refitting an isotonic regression on its own thresholds gives back the same step function
            cal.iso_ = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(np.array(d["x"]), np.array(d["y"]))
        return cal


def _logit(p: np.ndarray) -> np.ndarray:
    return logit(np.clip(p, 1e-12, 1 - 1e-12))


@dataclass(frozen=True)
class TemporalSplit:
    """Snapshot dates for training, calibration (and early stopping inside training) and test."""

    train: tuple[dt.date, ...]
    calibrate: tuple[dt.date, ...]
    test: tuple[dt.date, ...]

    def frames(self, frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        sel = lambda dates: frame.filter(pl.col("snapshot_date").is_in(list(dates)))  # noqa: E731
        return sel(self.train), sel(self.calibrate), sel(self.test)

    def describe(self) -> dict:
        return {"kind": "temporal", "snapshots": [str(d) for d in (self.train[0], self.train[-1])],
                "calibration_snapshots": [str(d) for d in self.calibrate], "test_snapshots": [str(d) for d in self.test]}


@dataclass(frozen=True)
class CustomerSplit:
    """For one-row-per-customer data (no dates): a stratified split of customers, seeded.

    With no time axis there is nothing to keep in order; each customer is in exactly one part.
    `calibration_size=0` (the default) holds out no calibration part: the calibrator is fitted on
    cross-fitted (out-of-fold) predictions of the training part, so small tables keep all their rows
    for training. `test_size=0` keeps no test part (e.g. inside a cross-validation fold).
    """

    test_size: float = 0.2
    calibration_size: float = 0.0
    seed: int = 0

    def parts(self, frame: pl.DataFrame) -> np.ndarray:
        """0 = train, 1 = calibrate, 2 = test, per row, stratified by the label."""
        from sklearn.model_selection import train_test_split
        idx = np.arange(frame.height)
        y = frame["churned"].to_numpy()
        part = np.zeros(frame.height, dtype=int)
        rest = idx
        if self.test_size >= 1:  # a separate test file: every row is scored
            return np.full(frame.height, 2)
        if self.test_size > 0:
            rest, test = train_test_split(idx, test_size=self.test_size, stratify=y, random_state=self.seed)
            part[test] = 2
        if self.calibration_size > 0:
            _, cal = train_test_split(rest, test_size=self.calibration_size / (1 - self.test_size), stratify=y[rest],
                                      random_state=self.seed)
            part[cal] = 1
        return part

    def frames(self, frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        part = self.parts(frame)
        return tuple(frame.filter(pl.Series(part == k)) for k in range(3))

    def describe(self) -> dict:
        return {"kind": "customers", "test_size": self.test_size, "calibration_size": self.calibration_size, "seed": self.seed}


def split_from_metadata(table: FeatureTable, meta: dict) -> TemporalSplit | CustomerSplit:
    """The split a saved model was trained with, rebuilt on `table` (for `trustml evaluate`)."""
    if meta.get("kind") == "customers":
        return CustomerSplit(meta["test_size"], meta["calibration_size"], meta["seed"])
    dates = sorted(table.labelled()["snapshot_date"].unique().to_list())
    pick = lambda names: tuple(d for d in dates if str(d) in names)  # noqa: E731
    return TemporalSplit(tuple(d for d in dates if meta["snapshots"][0] <= str(d) <= meta["snapshots"][1]),
                         pick(meta["calibration_snapshots"]), pick(meta["test_snapshots"]))


def default_split(table: FeatureTable) -> TemporalSplit | CustomerSplit:
    """Temporal for snapshots over time; a stratified customer split for flat (undated) tables."""
    return CustomerSplit() if table.is_flat else temporal_split(table)


def temporal_split(table: FeatureTable, *, test_snapshots: int = 3, calibration_snapshots: int = 2,
                   gap_snapshots: int | None = None) -> TemporalSplit:
    """Train on earlier snapshots, calibrate on the next, test on the latest labelled ones.

    A gap of one horizon between blocks keeps a training label window from overlapping test
    features (default: enough snapshots to cover the label horizon).
    """
    dates = sorted(table.labelled()["snapshot_date"].unique().to_list())
    gap = gap_snapshots if gap_snapshots is not None else _horizon_in_snapshots(table)
    need = test_snapshots + calibration_snapshots + 2 * gap + 2
    if len(dates) < need:
        raise ValueError(f"need at least {need} labelled snapshot dates for this split, have {len(dates)}")
    test = dates[-test_snapshots:]
    cal_end = len(dates) - test_snapshots - gap
    cal = dates[cal_end - calibration_snapshots:cal_end]
    train = dates[:cal_end - calibration_snapshots - gap]
    return TemporalSplit(tuple(train), tuple(cal), tuple(test))


def _horizon_in_snapshots(table: FeatureTable) -> int:
    d0 = dt.date(2000, 1, 1)
    every = pl.select(pl.lit(d0).dt.offset_by(table.snapshots.every)).item()
    end = pl.select(pl.lit(d0).dt.offset_by(table.snapshots.lead).dt.offset_by(table.snapshots.horizon)).item()
    return max(0, -(-(end - d0).days // max((every - d0).days, 1)) - 1)


def fingerprint(frame: pl.DataFrame) -> str:
    """A short, stable fingerprint of a table's schema and content."""
    return _Fingerprint().update(frame).hexdigest()


class _Fingerprint:
    """`fingerprint` of a table fed in pieces, in row order: the same as of the whole table."""

    def __init__(self):
        self._hash = None

    def update(self, frame: pl.DataFrame) -> _Fingerprint:
        if self._hash is None:
            self._hash = hashlib.sha256("|".join(f"{k}:{v}" for k, v in frame.schema.items()).encode())
        self._hash.update(frame.hash_rows(seed=0).to_numpy().tobytes())
        return self

    def hexdigest(self) -> str:
        return self._hash.hexdigest()[:16]


@dataclass
class TrainedModel:
    """A fitted churn model with its calibrator, registry and provenance; saved without pickle."""

    model: ChurnModel
    registry: FeatureRegistry
    calibrator: Calibrator | None = None
    metadata: dict = field(default_factory=dict)

    def _check(self, frame: pl.DataFrame) -> pl.DataFrame:
        missing = [n for n in self.registry.names if n not in frame.columns]
        if missing:
            raise ModelMismatchError(f"the data lacks {len(missing)} feature(s) the model was trained on: {missing[:8]}")
        return frame.select(self.registry.names)

    def log_odds(self, frame: pl.DataFrame) -> np.ndarray:
        """The model's log-odds of churn, plus the frame's `risk_offset` column where it has one (`out_of_fold`)."""
        z = self.model.decision_function(self._check(frame))
        return z + frame[OFFSET].fill_null(0.0).to_numpy() if OFFSET in frame.columns else z

    def predict_risk(self, frame: pl.DataFrame, *, calibrated: bool = True) -> np.ndarray:
        """Churn probability over the label horizon, calibrated if a calibrator was fitted.

        Every risk trustml shows (reason codes, what-if, plans, campaigns, reports) comes from here or from
        `risk_from_log_odds`, so one customer has one risk everywhere.
        """
        return self.risk_from_log_odds(self.log_odds(frame), calibrated=calibrated)

    def risk_from_log_odds(self, z, *, calibrated: bool = True) -> np.ndarray:
        """The risk a model output (log-odds of churn, e.g. base value + SHAP values) stands for."""
        p = expit(np.asarray(z, dtype=float))
        return self.calibrator.predict(p) if calibrated and self.calibrator is not None else p

    def save(self, path: str | Path) -> Path:
        """Write `model.txt` (LightGBM's text format) and `model.json` (metadata); no pickle.

        model.json records the SHA-256 of model.txt and of its own content, and the training features'
        types, so `load` refuses a folder whose files were edited, truncated or mixed from two models.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        text = self.model.booster_.model_to_string()
        meta = {
            "format_version": FORMAT_VERSION,
            "params": {k: v for k, v in self.model.get_params().items() if k != "monotone_constraints"},
            "monotone_constraints": None if self.model.monotone_constraints is None else list(self.model.monotone_constraints),
            "feature_names": list(self.model.feature_names_in_),
            "schema": {n: ("category" if n in self.model.categories_ else "number") for n in self.model.feature_names_in_},
            "categories": self.model.categories_,
            "classes": [int(c) if isinstance(c, np.integer) else c for c in self.model.classes_],
            "n_iter": int(self.model.n_iter_),
            "linear_base": getattr(self.model, "linear_", None),
            "registry": self.registry.to_dict(),
            "calibrator": None if self.calibrator is None else self.calibrator.to_dict(),
            "versions": _versions(),
            **self.metadata,
            "checksums": {"model.txt": hashlib.sha256(text.encode()).hexdigest()},
        }
        meta = json.loads(json.dumps(meta, default=str))
        meta["integrity"] = _digest(meta)
        tmp_txt, tmp_json = path / ".model.txt.tmp", path / ".model.json.tmp"
        tmp_txt.write_text(text)
        tmp_json.write_text(json.dumps(meta, indent=2))
        tmp_txt.replace(path / "model.txt")
        tmp_json.replace(path / "model.json")
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrainedModel:
        """Read a saved model, verifying both files first; any mismatch is one clear `ContractError`."""
        from trustml.contract import ContractError, Problem
        path = Path(path)
        meta, text = read_checked(path, "model", FORMAT_VERSION, kind="trustml model (from `trustml train --out`)", redo="retrain")

        def bad(name, what):
            return ContractError([Problem(str(path / name) if name else str(path), None, what)])
        try:
            booster = lgb.Booster(model_str=text.decode("utf-8"))
        except (lgb.basic.LightGBMError, UnicodeDecodeError) as e:
            raise bad("model.txt", f"LightGBM cannot read it: {e}") from None
        if booster.num_feature() != len(meta["feature_names"]):
            raise bad("model.txt", f"has {booster.num_feature()} features, model.json lists {len(meta['feature_names'])}")
        meta.pop("integrity"), meta.pop("checksums"), meta.pop("format_version"), meta.pop("schema"), meta.pop("versions")
        model = ChurnModel(**meta.pop("params"), monotone_constraints=meta.pop("monotone_constraints"))
        model.booster_ = booster
        model.feature_names_in_ = np.array(meta.pop("feature_names"), dtype=object)
        model.n_features_in_ = len(model.feature_names_in_)
        model.categories_ = meta.pop("categories")
        model.classes_ = np.array(meta.pop("classes"))
        model.n_iter_ = meta.pop("n_iter")
        model.linear_ = meta.pop("linear_base")
        registry = FeatureRegistry.from_dict(meta.pop("registry"))
        cal = meta.pop("calibrator")
        return cls(model, registry, None if cal is None else Calibrator.from_dict(cal), meta)


def read_checked(path: Path, stem: str, version: int, *, kind: str, redo: str) -> tuple[dict, bytes]:
    """(metadata, text) of a folder holding `<stem>.json` and `<stem>.txt`, written with the text's SHA-256 and the
    JSON's own checksum: any problem (missing, not JSON, other format version, edited, files from two saves) is one
    `ContractError` naming the file and what to do (`redo`). Serves the churn and the hazard models."""
    from trustml.contract import ContractError, Problem

    def bad(name, what):
        return ContractError([Problem(str(path / name) if name else str(path), None, what)])
    js, txt = f"{stem}.json", f"{stem}.txt"
    if not path.exists():
        raise bad(None, f"not found, so {js} and {txt} are missing (a saved {kind} is a folder holding both)")
    if not path.is_dir():
        raise bad(None, f"not a folder: a saved {kind} is a folder with {js} and {txt}")
    missing = [n for n in (js, txt) if not (path / n).is_file()]
    if missing:
        raise bad(None, f"not a saved {kind}: {' and '.join(missing)} missing")
    try:
        meta = json.loads((path / js).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(js, f"not valid JSON ({e}); {redo} or restore the folder") from None
    if not isinstance(meta, dict) or meta.get("format_version") != version:
        got = meta.get("format_version") if isinstance(meta, dict) else None
        raise bad(js, f"format version {got} is not {version}: saved by another trustml version; {redo}")
    if meta.get("integrity") != _digest({k: v for k, v in meta.items() if k != "integrity"}):
        raise bad(js, f"edited after it was saved (its checksum does not match): {redo}, or restore the saved file")
    text = (path / txt).read_bytes()
    if hashlib.sha256(text).hexdigest() != meta["checksums"][txt]:
        raise bad(txt, f"does not match {js} (truncated, edited, or from another model): {redo}, or restore both files together")
    return meta, text


def _digest(meta: dict) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _versions() -> dict:
    import shap
    import sklearn
    return {"lightgbm": lgb.__version__, "polars": pl.__version__, "scikit-learn": sklearn.__version__,
            "shap": shap.__version__, "numpy": np.__version__}


# Small, slowly learned trees with early stopping: what `train(trials=0)` uses, and the first setting tuning tries
# (the best of a sweep on the simulated default world: test AUC 0.6876 vs 0.6811 for ChurnModel's generic defaults).
TRAIN_DEFAULTS = dict(num_leaves=4, learning_rate=0.02, n_estimators=1500, min_child_samples=100,
                      colsample_bytree=0.5, early_stopping=True)
# What a plain `lightgbm.LGBMClassifier()` uses (lambda 0 is the search's floor, 0.001): tried second, so the tuned
# model is never chosen over LightGBM's own defaults unless it scores at least as well on validation.
LIGHTGBM_DEFAULTS = dict(num_leaves=31, learning_rate=0.1, min_child_samples=20, colsample_bytree=1.0, subsample=1.0,
                         reg_lambda=1e-3)
SEARCH_SPACE = {  # parameter: (kind, low, high, log scale)
    "num_leaves": ("int", 2, 64, True),
    "learning_rate": ("float", 0.01, 0.2, True),
    "min_child_samples": ("int", 5, 300, True),
    "colsample_bytree": ("float", 0.3, 1.0, False),
    "subsample": ("float", 0.5, 1.0, False),
    "reg_lambda": ("float", 1e-3, 30.0, True),
    "linear_base": ("categorical", False, True, False),
}
STARTS = ("trustml small trees", "LightGBM defaults", "small trees on a linear base")  # the first trials, in order
DEFAULT_TRIALS = 20      # Optuna trials per data set: a bounded default budget (CLI --trials, Study.load(trials=), mapping [model])
MAX_ROUNDS = 2000        # boosting rounds at most; early stopping on the validation part picks the number
OFFSET = "risk_offset"    # a frame column of log-odds added to the model's output (out-of-fold risk for flat tables)
MIN_CLASS = 10           # churners and stayers each, at the least, for a split that trains, validates and tests
TRAIN_MAX_ROWS = 2_000_000  # the final fit reads a seeded sample of whole customers beyond this many training rows
TUNE_MAX_ROWS = 60_000   # tuning looks at a seeded sample of at most this many training rows


@dataclass
class Tuning:
    """What the search tried and what it chose; recorded in the model card."""

    params: dict              # the chosen ChurnModel parameters (n_estimators included)
    score: float              # validation ROC-AUC of the choice
    validation: str           # how it was validated
    trials: pl.DataFrame      # one row per trial: source, parameters, validation AUC, rounds

    def to_dict(self) -> dict:
        return {"chosen": self.params, "validation_roc_auc": round(self.score, 5), "validation": self.validation,
                "search_space": {k: ({"kind": "choice", "values": [v[1], v[2]]} if v[0] == "categorical" else
                                 {"kind": v[0], "low": v[1], "high": v[2], "log": v[3]}) for k, v in SEARCH_SPACE.items()},
                "max_rounds": MAX_ROUNDS, "trials": self.trials.to_dicts()}


def tune(X: pl.DataFrame, y, *, time=None, trials: int = DEFAULT_TRIALS, seed: int = 0, fixed: dict | None = None,
         monotone_constraints=None, progress: bool = False) -> Tuning:
    """Choose LightGBM parameters for this data with Optuna (TPE, seeded), on the training part only.

    Validation: rolling origin over the snapshot dates of `time` (each fold validates on a later block of
    dates, trained on all dates before it; never shuffled), else stratified 3-fold cross-validation (flat
    tables). Each trial early-stops on validation ROC-AUC. The first three trials are `STARTS`:
    `TRAIN_DEFAULTS`, `LIGHTGBM_DEFAULTS`, and small trees boosted from a linear base. A search trial whose
    score on a fold falls below the median of the earlier trials on that fold stops there (Optuna's
    `MedianPruner`; marked in the table, never chosen). The binned data of each fold is built once for all
    trials. Parameters in `fixed` are not searched. Deterministic for a seed.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = pl.DataFrame({"a": rng.normal(size=600), "b": rng.normal(size=600)})
    >>> y = (X["a"] + rng.normal(size=600) > 1).cast(pl.Int8).to_numpy()
    >>> t = tune(X, y, trials=4)
    >>> t.trials["source"].to_list()
    ['trustml small trees', 'LightGBM defaults', 'small trees on a linear base', 'search']
    """
    import optuna
    from sklearn.model_selection import StratifiedKFold
    fixed = dict(fixed or {})
    if monotone_constraints is not None:
        fixed["linear_base"] = False  # a linear part would not follow the declared directions
    y = np.asarray(y, dtype=float)
    Xm = ChurnModel()._matrix(X, fit=True) if isinstance(X, pl.DataFrame) else np.asarray(X, dtype=float)
    cat = [i for i, c in enumerate(X.columns) if X.schema[c] in (pl.String, pl.Categorical)] if isinstance(X, pl.DataFrame) else []
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(y), TUNE_MAX_ROWS, replace=False)) if len(y) > TUNE_MAX_ROWS else np.arange(len(y))
    Xm, y = Xm[keep], y[keep]
    if time is not None:
        # rolling origin: each fold validates on a later block of snapshot dates, trained on all dates before it
        t = np.asarray(time)[keep]
        dates = np.unique(t)
        n_folds = int(min(3, max(1, (len(dates) - 1) // 2)))
        block = max(1, int(round(0.15 * len(dates) / n_folds * 2)))
        folds = []
        for f in range(n_folds):
            hi = len(dates) - f * block
            lo = hi - block
            if lo < 1:
                break
            tr_i, va_i = np.nonzero(t < dates[lo])[0], np.nonzero((t >= dates[lo]) & (t <= dates[hi - 1]))[0]
            if len(np.unique(y[tr_i])) == 2 and len(np.unique(y[va_i])) == 2:
                folds.append((tr_i, va_i))
        if not folds:
            raise ValueError("tuning: no later block of snapshots has both churners and stayers; pass trials=0")
        validation = (f"rolling origin over snapshot dates: {len(folds)} fold(s), each validating on {block} later snapshot(s) "
                      f"({len(y):,} training rows)")
    else:
        k = int(min(3, np.bincount(y.astype(int)).min()))
        if k < 2:
            raise ValueError("tuning needs at least 2 churners and 2 stayers; pass trials=0")
        folds = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
        validation = f"stratified {k}-fold cross-validation on {len(y):,} training rows"
    max_rounds = int(fixed.pop("n_estimators", MAX_ROUNDS))
    fixed.pop("early_stopping", None)
    data = {}  # (fold, linear base?) -> the binned training and validation Datasets, built once for every trial
    rows = []

    def fold_data(f: int, linear: bool):
        if (f, linear) not in data:
            tr, va = folds[f]
            init_tr = init_va = None
            if linear:   # a linear base fitted on that fold's training rows only
                base = fit_linear_base(Xm[tr], y[tr], cat)
                init_tr, init_va = linear_score(base, Xm[tr]), linear_score(base, Xm[va])
            dtr = lgb.Dataset(Xm[tr], y[tr], categorical_feature=cat, init_score=init_tr, free_raw_data=False,
                              params={"feature_pre_filter": False, "verbosity": -1})
            data[(f, linear)] = (dtr, dtr.create_valid(Xm[va], y[va], init_score=init_va))
        return data[(f, linear)]

    def fold_auc(model: ChurnModel, f: int) -> tuple[float, int]:
        dtr, dva = fold_data(f, bool(model.linear_base))
        curve: dict = {}
        lgb.train({**model._params(), "metric": "auc", "feature_pre_filter": False}, dtr, max_rounds, valid_sets=[dva], valid_names=["va"],
                  callbacks=[lgb.early_stopping(50, verbose=False), lgb.record_evaluation(curve)])
        auc = np.asarray(curve["va"]["auc"])
        return float(auc.max()), int(np.argmax(auc)) + 1

    def run(params: dict, source: str, trial=None) -> float:
        model = ChurnModel(**{**params, **fixed}, monotone_constraints=monotone_constraints, random_state=seed)
        scores = []
        for f in range(len(folds)):
            scores.append(fold_auc(model, f))
            if trial is not None and f < len(folds) - 1:
                trial.report(scores[-1][0], f)
                if trial.should_prune():   # below the median of earlier trials on this fold: not worth the other folds
                    break
        pruned = len(scores) < len(folds)
        score = float(np.mean([a for a, _ in scores]))
        rows.append({"trial": len(rows), "source": source + (f" (stopped after {len(scores)} of {len(folds)} folds)" if pruned else ""),
                     **{k: params.get(k) for k in SEARCH_SPACE}, "validation_roc_auc": score,
                     "rounds": int(round(np.mean([r for _, r in scores]))), "complete": not pruned})
        if pruned:
            raise optuna.TrialPruned
        return score

    free = {k: v for k, v in SEARCH_SPACE.items() if k not in fixed}

    def objective(trial) -> float:
        params = {k: (trial.suggest_categorical(k, [lo, hi]) if kind == "categorical" else
                      (trial.suggest_int if kind == "int" else trial.suggest_float)(k, lo, hi, log=log))
                  for k, (kind, lo, hi, log) in free.items()}
        return run(params, STARTS[trial.number] if trial.number < len(STARTS) else "search", trial)

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        # a search trial whose first folds fall below the median of the earlier trials stops there (the starts never do)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=len(STARTS), n_warmup_steps=0)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)
        small = {**TRAIN_DEFAULTS, "subsample": 0.8, "reg_lambda": 1.0, "linear_base": False}
        starts = (small, {**LIGHTGBM_DEFAULTS, "linear_base": False}, {**small, "linear_base": True})
        for start in starts[:max(trials, 1)]:
            study.enqueue_trial({k: v for k, v in start.items() if k in free})
        steps = range(max(trials, 1))
        if progress:
            from tqdm.auto import tqdm
            steps = tqdm(steps, desc="tuning", unit="trial")
        for _ in steps:
            study.optimize(objective, n_trials=1)
    finally:
        optuna.logging.set_verbosity(level)
    table = pl.DataFrame(rows)
    best = table.filter("complete").sort(["validation_roc_auc", "trial"], descending=[True, False]).row(0, named=True)
    params = {**{k: best[k] for k in free}, **fixed, "n_estimators": int(best["rounds"]), "early_stopping": False}
    return Tuning(params, float(best["validation_roc_auc"]), validation, table)


def _out_of_fold(model: ChurnModel, X: pl.DataFrame, y: np.ndarray, seed: int, folds: int = 5) -> np.ndarray:
    """Cross-fitted churn probabilities of the training rows (models with `model`'s parameters)."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold
    out = np.zeros(len(y))
    k = int(min(folds, np.bincount(y.astype(int)).min()))
    for tr, va in StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        out[va] = clone(model).fit(X[tr], y[tr]).predict_proba(X[va])[:, 1]
    return out


def out_of_fold(table: FeatureTable, trained: TrainedModel, split: CustomerSplit, *, seed: int = 0,
                stayers_only: bool = True) -> pl.DataFrame:
    """Every customer of a flat table that has not churned, each with a risk from a model that never saw them.

    A flat table has no later snapshot to act on: the customers to act on are its stayers. Test customers are
    scored by `trained` (they were held out); a training customer by the cross-fitted model of `train` that left
    them out (the same folds the calibrator was fitted on). The difference is the `risk_offset` column (log-odds),
    which `TrainedModel.log_odds` adds, so every risk, what-if and campaign starts from an honest risk while
    the change a what-if makes is still the trained model's. `stayers_only=False` keeps the churners too.

    Examples
    --------
    >>> from trustml.mapping import Mapping, flat_table
    >>> rng = np.random.default_rng(0)
    >>> df = pl.DataFrame({"id": [str(i) for i in range(400)], "tickets": rng.poisson(2, 400),
    ...                    "left": (rng.random(400) < 0.3).astype(int)})
    >>> m = Mapping.from_dict({"kind": "flat", "columns": {"id": "id", "target": "left", "positive": ["1"]},
    ...                        "pillars": {"service_quality": ["tickets"]}})
    >>> table = flat_table(df, m)
    >>> trained, split = train(table, trials=0)
    >>> rows = out_of_fold(table, trained, split)
    >>> rows.height == int((df["left"] == 0).sum()), OFFSET in rows.columns
    (True, True)
    """
    lab = table.labelled()
    part = split.parts(lab)
    names = trained.registry.names
    offset = np.zeros(lab.height)
    tr = np.nonzero(part == 0)[0]
    if len(tr):
        X, y = lab[tr].select(names), lab[tr]["churned"].to_numpy()
        params = {k: v for k, v in trained.model.get_params().items()}
        oof = _out_of_fold(ChurnModel(**params), X, y, seed)
        offset[tr] = _logit(oof) - trained.model.decision_function(X)
    rows = lab.with_columns(pl.Series(OFFSET, offset))
    return rows.filter(pl.col("churned") == 0) if stayers_only else rows


def sample_customers(frame: pl.DataFrame, max_rows: int, seed: int = 0) -> tuple[pl.DataFrame, int, int]:
    """(rows, customers kept, customers there were): a seeded sample of whole customers (each kept customer keeps
    every snapshot) of about `max_rows` rows, or `frame` itself when it is no larger.

    Examples
    --------
    >>> f = pl.DataFrame({"customer_id": [1, 1, 2, 2, 3, 3, 4, 4], "x": range(8)})
    >>> rows, kept, of = sample_customers(f, 4)
    >>> rows.height, kept, of, rows.group_by("customer_id").len()["len"].to_list()
    (4, 2, 4, [2, 2])
    """
    ids = frame["customer_id"].unique().sort()
    if frame.height <= max_rows:
        return frame, len(ids), len(ids)
    keep = ids.sample(int(len(ids) * max_rows / frame.height), seed=seed, shuffle=True)
    return frame.filter(pl.col("customer_id").is_in(keep.implode())), len(keep), len(ids)


def train(table: FeatureTable, split: TemporalSplit | CustomerSplit | None = None, *, calibration: str | None = "auto",
          monotone: bool = False, trials: int = DEFAULT_TRIALS, seed: int = 0, leakage: str = "warn", progress: bool = False,
          **params) -> tuple[TrainedModel, TemporalSplit | CustomerSplit]:
    """Tune on the training part, fit, and calibrate on later data (held-out customers for flat tables).

    trials: Optuna trials (0: `TRAIN_DEFAULTS` with early stopping, no search). `params` are fixed
    `ChurnModel` parameters, left out of the search. calibration: 'auto', 'sigmoid', 'isotonic' or None
    (see `Calibrator`). leakage: 'warn' records suspected leaks (`trustml.leakage`) in the metadata,
    'refuse' raises a `ContractError` naming them, 'ignore' skips the check.
    """
    from trustml.contract import ContractError, Problem
    from trustml.leakage import check_leakage
    lab = table.labelled()
    churners = int(lab["churned"].sum()) if lab.height else 0
    if min(churners, lab.height - churners) < MIN_CLASS:
        raise ContractError([Problem("features", "churned", f"too few to learn from: {churners:,} churners and "
                                     f"{lab.height - churners:,} stayers labelled; trustml needs at least {MIN_CLASS} of each "
                                     "to train, validate and test")])
    if all(lab[n].n_unique() <= 1 for n in table.registry.names):
        raise ContractError([Problem("features", None, "every feature is constant: there is nothing to learn from")])
    split = split or default_split(table)
    tr, cal, _ = split.frames(lab)
    registry = table.registry
    leaks = None
    if leakage != "ignore":
        leaks = check_leakage(tr, registry, per_customer=not table.is_flat)
        if leakage == "refuse" and leaks.height:
            raise ContractError([Problem("features", r["feature"], f"suspected leak: {r['evidence']}") for r in leaks.iter_rows(named=True)])
    mono = registry.monotone_constraints() if monotone else None
    time = tr["snapshot_date"].to_numpy() if isinstance(split, TemporalSplit) else None
    sampled = None
    if tr.height > TRAIN_MAX_ROWS:   # stated in the model card
        rows_before = tr.height
        tr, keep, of = sample_customers(tr, TRAIN_MAX_ROWS, seed)
        sampled = {"customers": keep, "of_customers": of, "rows_before": rows_before, "rows": tr.height}
        time = tr["snapshot_date"].to_numpy() if isinstance(split, TemporalSplit) else None
    X, y = tr.select(registry.names), tr["churned"]
    tuning = None
    if trials > 0:
        tuning = tune(X, y.to_numpy(), time=time, trials=trials, seed=seed, fixed=params, monotone_constraints=mono, progress=progress)
        chosen = tuning.params
    else:
        chosen = {**TRAIN_DEFAULTS, **params}
    model = ChurnModel(monotone_constraints=mono, random_state=seed, **chosen)
    model.fit(X, y, time=time)
    calibrator = None
    if calibration and cal.height and cal["churned"].n_unique() == 2:
        calibrator = Calibrator(calibration).fit(model.predict_proba(cal.select(registry.names))[:, 1], cal["churned"].to_numpy())
    elif calibration and isinstance(split, CustomerSplit) and not cal.height:
        calibrator = Calibrator(calibration).fit(_out_of_fold(model, X, y.to_numpy(), seed), y.to_numpy())
    meta = {"trained_on": {"fingerprint": fingerprint(table.frame), "rows": tr.height, **split.describe(),
                           **({"sampled": sampled} if sampled else {})},
            "tuning": None if tuning is None else tuning.to_dict(),
            "leakage": None if leaks is None else leaks.to_dicts()}
    return TrainedModel(model, registry, calibrator, meta), split
