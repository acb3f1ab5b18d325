"""A seeded trust-world simulator: customers, their event logs, and the ground truth.

Each customer carries a latent trust level per pillar. Every month their experiences
(tickets and how they were resolved, promises kept or broken, marketing contact against
their tolerance, price changes with or without notice, surprise fees, privacy incidents,
referrals) move it, and it decays back toward neutral. The monthly churn hazard is

    logit(h) = intercept + account + engagement - sum_p weight_p * trust_p

so each pillar's true contribution to a customer's risk is known exactly. What the founding
research says is built in: a broken promise costs trust; a problem resolved fast and with
empathy leaves trust *higher* than before; contact beyond a customer's tolerance erodes
it while a little is welcome (non-monotone); referrals signal and reinforce trust.
Confounding is on purpose: heavy users open more tickets *and* churn less.

Randomness comes only from the seed. Draws never depend on the policy, so re-simulating
the same customers under a `Policy` uses common random numbers: the difference in churn
probability is the true individual effect of the lever.

Examples
--------
>>> world = simulate(n_customers=500, n_months=12, seed=1)
>>> world.customers.height
500
>>> sorted(world.truth.columns)[:3]
['churn_prob', 'churned_this_month', 'contrib_account']
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy.special import expit

from trustml.pillars import EVENT_TYPES, TRUST_PILLARS

__all__ = ["Policy", "Campaign", "OFFERS", "campaign_effects", "SimConfig", "World", "WorldOnDisk", "simulate", "simulate_to_dir", "true_effects", "leading_customers",
           "write_world", "read_world", "read_truth",
           "EVENT_TYPE_DTYPE", "VALUES_EVENT_TYPE_DTYPE", "CHUNK_SIZE"]

VALUES_EVENT_TYPES = tuple(e for e, t in EVENT_TYPES.items() if t.pillar == "values")
# the default world's event types (values events exist only with SimConfig(values_events=True): the default stays as it was)
EVENT_TYPE_DTYPE = pl.Enum([e for e in EVENT_TYPES if e not in VALUES_EVENT_TYPES])
VALUES_EVENT_TYPE_DTYPE = pl.Enum(list(EVENT_TYPES))
CHUNK_SIZE = 50_000  # customers per block; fixed so the output never depends on how big a run is
PLANS = ("basic", "standard", "premium")
CHANNELS = ("organic", "paid", "referral")
_HOUR = np.timedelta64(3600_000_000, "us")
_DAY = 24 * _HOUR


OFFERS = ("service_call", "discount", "promise_followup", "goodwill_credit")


@dataclass(frozen=True)
class Campaign:
    """A randomised retention campaign in month `month` (0-based; negative counts back from the world's end, -6 = six
    months before it, so one setting fits any length): `share` of active customers get `offer`.

    Assignment is `trustml.campaigns.assign(ids, share, seed)`, so the analysis can rebuild it.
    Offers (their true effects, drawn from the customer's hidden state):

    * every contacting offer (all but goodwill_credit) is a contact: welcome to most (+0.05
      respect-for-time trust), but contact-averse customers (tolerance 1 a month, the "sleeping
      dogs") lose 0.6, and anyone already at their monthly contact limit loses 0.15 more;
    * ``service_call``: +0.7 service trust if the customer had a ticket in the last 3 months, else +0.1; +0.2 empathy;
    * ``discount``: 20% off the price for the next 3 months (price-sensitive customers gain most);
    * ``promise_followup``: +0.9 promise trust after a broken promise in the last 3 months, else +0.05;
    * ``goodwill_credit`` (trusting the customer: a credit without proof, no call): +0.35 promise and
      transparency trust; 15% of customers abuse it (claim it repeatedly, 4x the cost) and gain nothing.
    """

    offer: str
    month: int
    share: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if self.offer not in OFFERS:
            raise ValueError(f"Campaign.offer must be one of {OFFERS}, got {self.offer!r}")
        if not 0 <= self.share <= 1:
            raise ValueError(f"Campaign.share must be in [0, 1], got {self.share}")

    def month_in(self, n_months: int) -> int:
        """The campaign's month (0-based) in a world of `n_months`: a negative `month` counts back from its end.

        Examples
        --------
        >>> Campaign("service_call", month=-6).month_in(12), Campaign("service_call", month=4).month_in(12)
        (6, 4)
        """
        m = self.month + n_months if self.month < 0 else self.month
        if not 0 <= m < n_months:
            raise ValueError(f"Campaign.month must be in [-{n_months}, {n_months}) for a {n_months}-month world "
                             f"(negative: months before its end), got {self.month}")
        return m


@dataclass(frozen=True)
class Policy:
    """A what-if policy the company could have followed. The default is what it did."""

    keep_promises: bool = False
    max_marketing_per_month: int | None = None
    empathy_boost: float = 0.0
    announce_price_changes: bool = False
    resolution_speedup: float = 1.0  # resolution hours are divided by this
    campaign: Campaign | None = None  # a randomised retention campaign (None: no campaign)

    def describe(self) -> str:
        changed = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if getattr(self, f.name) != f.default}
        return ", ".join(f"{k}={v}" for k, v in changed.items()) or "as observed"


@dataclass(frozen=True)
class SimConfig:
    """The world's knobs. `base_logit` sets the monthly churn level (about 2-4% a month by default)."""

    start: dt.date = dt.date(2024, 1, 1)
    base_logit: float = -4.0
    trust_decay: float = 0.75
    pillar_weights: tuple[tuple[str, float], ...] = (
        ("service_quality", 0.8), ("empathy", 0.7), ("promises", 1.0),
        ("transparency", 0.9), ("respect_for_time", 0.8), ("advocacy", 1.2))
    plan_prices: tuple[float, ...] = (20.0, 45.0, 90.0)
    plan_logit: tuple[float, ...] = (0.3, 0.0, -0.3)
    usage_sessions_per_month: float = 6.0
    tickets_per_month: float = 0.35
    promise_keep_rate: float = 0.75
    marketing_per_month: float = 2.5
    price_rise_month_share: float = 0.04
    privacy_incident_rate: float = 0.004
    # regime changes: (month index, knob, new value), the knob taking the new value from that month on;
    # knobs: price_rise_month_share, price_rise_unannounced_share (0.5 otherwise), privacy_incident_rate.
    # No change (the default) is the world as before, byte for byte. Before a change's month the truth (trust, hazard,
    # churn) is the unchanged world's; timestamps within a month may differ (their draws follow the event counts).
    changes: tuple[tuple[int, str, float], ...] = ()
    # values alignment (off by default: the default world is unchanged): company-wide ethics incidents and values
    # commitments, in months drawn once per seed (shared by every customer), move "values" trust much more for
    # customers who care about values (a hidden trait, `values_care_share` of them); customers who care complain
    # about an incident (values_complaint) now and then
    values_events: bool = False
    values_care_share: float = 0.35
    values_incident_rate: float = 0.08      # chance of a company-wide ethics incident in a month
    values_commitment_rate: float = 0.06    # chance of a company-wide values commitment in a month
    values_weight: float = 0.9              # weight of values trust in the churn logit

    @property
    def pillars(self) -> tuple[str, ...]:
        """The trust pillars the world plays (values only with `values_events`)."""
        return tuple(p for p in TRUST_PILLARS if p != "values" or self.values_events)

    def by_month(self, knob: str, n_months: int) -> np.ndarray:
        """The knob's value in each month, after `changes` (e.g. more unannounced price rises from month 18)."""
        base = {"price_rise_month_share": self.price_rise_month_share, "price_rise_unannounced_share": 0.5,
                "privacy_incident_rate": self.privacy_incident_rate}
        bad = [k for _, k, _ in self.changes if k not in base]
        if bad:
            raise ValueError(f"SimConfig.changes: unknown knob(s) {bad}; choose from {sorted(base)}")
        out = np.full(n_months, float(base[knob]))
        for month, k, value in sorted(self.changes, key=lambda c: c[0]):
            if k == knob:
                out[int(month):] = value
        return out


@dataclass
class World:
    """Simulated tables: `customers`, `events` (the contract's), and `truth` (one row per customer-month)."""

    customers: pl.DataFrame
    events: pl.DataFrame
    truth: pl.DataFrame
    config: SimConfig
    policy: Policy
    seed: int
    n_months: int

    @property
    def as_of(self) -> dt.datetime:
        return _month_starts(self.config.start, self.n_months + 1)[-1].astype(dt.datetime)

    def scan(self, table: str) -> pl.LazyFrame:
        """One of the tables ('customers', 'events', 'truth') as a LazyFrame."""
        return getattr(self, table).lazy()

    def summary(self) -> pl.DataFrame:
        """Counts per event type and pillar, with monthly churn rate from the truth."""
        from trustml.pillars import pillar_of_event
        return (self.events.group_by("event_type").agg(pl.len().alias("events"))
                .with_columns(pl.col("event_type").cast(pl.String),
                              pillar=pl.col("event_type").cast(pl.String).map_elements(pillar_of_event, return_dtype=pl.String))
                .sort("pillar", "event_type").select("pillar", "event_type", "events"))


class WorldOnDisk:
    """A world `write_world` or `simulate_to_dir` wrote under `folder`: its settings at once, each table read on first
    use (then kept) or scanned (`scan`) without reading it. At a million customers the event log is 130 million rows.

    Examples
    --------
    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> world = WorldOnDisk(simulate_to_dir(200, 6, seed=1, out=Path(tmp.name) / "world"))
    >>> world.events.equals(simulate(200, 6, seed=1).events), world.scan("truth").select(pl.len()).collect().item() > 0
    (True, True)
    >>> tmp.cleanup()
    """

    def __init__(self, folder: str | Path, config: SimConfig | None = None):
        import json
        self.folder = Path(folder)
        meta = json.loads((self.folder / "world.json").read_text())
        self.config = config or SimConfig()
        self.policy, self.seed, self.n_months = Policy(**meta["policy"]), meta["seed"], meta["n_months"]
        self.n_customers, self.n_events = meta["n_customers"], meta["n_events"]

    def scan(self, table: str) -> pl.LazyFrame:
        return pl.scan_parquet(self.folder / table / "*.parquet")

    @functools.cached_property
    def customers(self) -> pl.DataFrame:
        return self.scan("customers").collect()

    @functools.cached_property
    def events(self) -> pl.DataFrame:
        return self.scan("events").collect()

    @functools.cached_property
    def truth(self) -> pl.DataFrame:
        return self.scan("truth").collect()

    as_of = World.as_of
    summary = World.summary


def _month_starts(start: dt.date, n: int) -> np.ndarray:
    return np.array([np.datetime64(f"{start.year + (start.month - 1 + k) // 12}-{(start.month - 1 + k) % 12 + 1:02d}-01", "us")
                     for k in range(n)])


def _clip_score(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 1, 5)


class _Block:
    """One block of customers: draws everything once (policy-free), then plays a policy."""

    def __init__(self, first_id: int, n: int, n_months: int, seed: int, block: int, cfg: SimConfig):
        self.cfg, self.n, self.M, self.first_id = cfg, n, n_months, first_id
        self.seed_key = (seed, block)  # for draws of opt-in features (a campaign): a stream of their own
        streams = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, block]).spawn(12)]
        (r_cust, r_use, r_tix, r_prom, r_mkt, r_price, r_fee, r_priv, r_ref, r_churn, r_sales, r_time) = streams
        M = n_months
        self.months = _month_starts(cfg.start, M + 1)
        # --- customers -------------------------------------------------------------------
        self.plan = r_cust.choice(3, size=n, p=[0.45, 0.35, 0.20])
        self.channel = r_cust.choice(3, size=n, p=[0.5, 0.3, 0.2])
        self.signup_month = r_cust.integers(0, max(M - 2, 1), size=n)
        month_len = (self.months[1:] - self.months[:-1]) / _DAY
        self.signup_ts = self.months[self.signup_month] + (r_cust.random(n) * month_len[self.signup_month] * _DAY).astype("timedelta64[us]")
        self.intensity = np.exp(r_cust.normal(0.0, 0.6, size=n))          # heavy vs light users
        self.tolerance = r_cust.choice([1, 2, 3, 4], size=n, p=[0.2, 0.35, 0.3, 0.15])  # contacts/month welcome
        self.price_sens = np.exp(r_cust.normal(0.0, 0.3, size=n))
        self.price0 = np.array(cfg.plan_prices)[self.plan] * np.exp(r_cust.normal(0, 0.1, size=n))
        self.referred_by_draw = r_cust.random(n)
        self.keep_rate = np.clip(cfg.promise_keep_rate + r_cust.normal(0, 0.1, size=n), 0.3, 0.98)
        self.mkt_rate = cfg.marketing_per_month * np.exp(r_cust.normal(0, 0.5, size=n)) * np.where(self.channel == 1, 1.4, 1.0)
        active = np.arange(M)[None, :] >= self.signup_month[:, None]
        # window inside each month the customer can act in: [lo, hi)
        self.lo = np.where(np.arange(M)[None, :] == self.signup_month[:, None], self.signup_ts[:, None], self.months[None, :M])
        self.span = (self.months[None, 1:] - self.lo)
        # --- counts per customer-month (policy-free) ------------------------------------
        self.n_use = np.where(active, r_use.poisson(cfg.usage_sessions_per_month * self.intensity[:, None], size=(n, M)), 0)
        self.n_tix = np.where(active, r_tix.poisson(cfg.tickets_per_month * self.intensity[:, None] ** 0.8 *
                                                     np.array([1.2, 1.0, 0.8])[self.plan][:, None], size=(n, M)), 0)
        self.n_mkt = np.where(active, r_mkt.poisson(self.mkt_rate[:, None], size=(n, M)), 0)
        self.n_sales_promise = np.where(active, r_sales.random((n, M)) < 0.05, 0).astype(int)
        self.price_rise = active & (r_price.random((n, M)) < cfg.by_month("price_rise_month_share", M)[None, :]) & (np.arange(M)[None, :] > self.signup_month[:, None])
        self.price_pct = r_price.uniform(5, 15, size=(n, M))
        self.announce_u = r_price.random((n, M))
        self.fee = active & (r_fee.random((n, M)) < 0.03)
        self.fee_amount = np.round(r_fee.uniform(5, 30, size=(n, M)), 2)
        incident_month = M * 2 // 3
        self.privacy = active & ((r_priv.random((n, M)) < cfg.by_month("privacy_incident_rate", M)[None, :]) |
                                 ((np.arange(M)[None, :] == incident_month) & (r_priv.random((n, 1)) < 0.05)))
        self.ref_u = r_ref.random((n, M))
        self.churn_u = r_churn.random((n, M))
        self.churn_day = r_churn.random((n, M))
        # --- per-ticket draws -------------------------------------------------------------
        idx = np.repeat(np.arange(n * M), self.n_tix.ravel())
        k = idx.size
        self.t_cell = idx
        self.t_when = r_tix.random(k)
        self.t_hours = np.exp(r_tix.normal(np.log(np.array([30.0, 20.0, 10.0])[self.plan[idx // M]]), 0.8))
        self.t_reopen_u = r_tix.random(k)
        self.t_empathy = r_tix.normal(3.4, 1.0, size=k)
        self.t_csat_u = r_tix.random(k)
        self.t_csat_noise = r_tix.normal(0, 0.6, size=k)
        self.t_promise = r_prom.random(k) < 0.5
        self.t_keep_u = r_prom.random(k)
        self.t_due_days = r_prom.integers(1, 8, size=k)
        s_idx = np.repeat(np.arange(n * M), self.n_sales_promise.ravel())
        self.s_cell, self.s_when = s_idx, r_sales.random(s_idx.size)
        self.s_keep_u, self.s_due_days = r_sales.random(s_idx.size), r_sales.integers(3, 15, size=s_idx.size)
        self.time_seed = int(r_time.integers(2**63))

    # --------------------------------------------------------------------------------------
    def play(self, policy: Policy, events: bool = True) -> tuple[dict, dict | None]:
        """Trust trajectories, hazards and events under `policy`. Returns (grids, event arrays; None without `events`:
        the events draw from their own generator, so the grids are the same either way)."""
        cfg, n, M = self.cfg, self.n, self.M
        pillars = cfg.pillars
        P = {p: np.zeros((n, M)) for p in pillars}
        cell_add = lambda grid, cells, vals: np.add.at(grid.ravel(), cells, vals)  # noqa: E731
        # tickets: a problem costs service trust; fast and empathetic resolution more than repays it
        hours = self.t_hours / policy.resolution_speedup
        fast = hours < 24
        reopened = self.t_reopen_u < np.where(hours > 72, 0.35, 0.12)
        emp_latent = self.t_empathy + policy.empathy_boost
        emp_score = _clip_score(emp_latent)
        cell_add(P["service_quality"], self.t_cell, -0.30 + 0.40 * fast - 0.35 * reopened)
        cell_add(P["empathy"], self.t_cell, 0.25 * (emp_latent - 3.0))
        # promises
        t_kept = self.t_promise & ((self.t_keep_u < self.keep_rate[self.t_cell // M]) | policy.keep_promises)
        t_broken = self.t_promise & ~t_kept
        s_kept = (self.s_keep_u < self.keep_rate[self.s_cell // M]) | policy.keep_promises
        cell_add(P["promises"], self.t_cell, 0.15 * t_kept - 0.70 * t_broken)
        cell_add(P["promises"], self.s_cell, 0.15 * s_kept - 0.70 * ~s_kept)
        # marketing: welcome up to the customer's tolerance, corrosive beyond it
        n_mkt = self.n_mkt if policy.max_marketing_per_month is None else np.minimum(self.n_mkt, policy.max_marketing_per_month)
        tol = self.tolerance[:, None]
        P["respect_for_time"] += 0.08 * np.minimum(n_mkt, tol) - 0.15 * np.maximum(n_mkt - tol, 0)
        # transparency
        announced = (self.announce_u < 1 - cfg.by_month("price_rise_unannounced_share", M)[None, :]) | policy.announce_price_changes
        P["transparency"] += np.where(self.price_rise, np.where(announced, -0.15, -0.9), 0.0)
        P["transparency"] += -0.45 * self.fee - 0.8 * self.privacy
        price = self.price0[:, None] * np.cumprod(np.where(self.price_rise, 1 + self.price_pct / 100, 1.0), axis=1)
        if policy.campaign is not None:
            price = self._campaign(policy.campaign, P, price, n_mkt, t_broken, s_kept)
        # trust recursion; referrals depend on trust and reinforce it
        w = dict(cfg.pillar_weights)
        if cfg.values_events:
            self._values(P)
        T = {p: np.zeros((n, M)) for p in pillars}
        referral = np.zeros((n, M), dtype=bool)
        start_adv = np.where(self.channel == 2, 0.6, 0.0)
        for m in range(M):
            at_signup = self.signup_month == m
            for p in pillars:
                prev = T[p][:, m - 1] if m else np.zeros(n)
                prev_shock = P[p][:, m - 1] if m else np.zeros(n)
                T[p][:, m] = cfg.trust_decay * prev + prev_shock
                if p == "advocacy":
                    T[p][:, m] = np.where(at_signup, start_adv, T[p][:, m] + 0.25 * (referral[:, m - 1] if m else 0))
                else:
                    T[p][:, m] = np.where(at_signup, 0.0, T[p][:, m])
            total = sum(T[p][:, m] for p in pillars)
            referral[:, m] = (self.ref_u[:, m] < expit(-3.8 + 0.9 * total)) & (m >= self.signup_month)
        w = {**w, "values": cfg.values_weight}
        contrib = {p: -w[p] * T[p] for p in pillars}
        tenure_m = np.maximum(np.arange(M)[None, :] - self.signup_month[:, None], 0)
        contrib["account"] = (np.array(cfg.plan_logit)[self.plan][:, None]
                              + 1.2 * self.price_sens[:, None] * np.log(price / np.array(cfg.plan_prices)[self.plan][:, None])
                              + 0.5 * np.exp(-tenure_m / 3.0))
        contrib["engagement"] = np.broadcast_to(-0.6 * np.log(self.intensity)[:, None], (n, M)).copy()
        logit = cfg.base_logit + sum(contrib.values())
        hazard = expit(logit)
        active = np.arange(M)[None, :] >= self.signup_month[:, None]
        churn_now = active & (self.churn_u < hazard)
        first = np.where(churn_now.any(axis=1), churn_now.argmax(axis=1), M)
        churn_ts = np.full(n, np.datetime64("NaT", "us"))
        has = first < M
        fm = first[has]
        rows = np.nonzero(has)[0]
        churn_ts[has] = self.lo[rows, fm] + (self.churn_day[rows, fm] * (self.span[rows, fm] / _HOUR)).astype(np.int64) * _HOUR
        end_ts = np.where(has, churn_ts, self.months[M])
        grids = dict(contrib=contrib, logit=logit, hazard=hazard, first_churn_month=first, churn_ts=churn_ts,
                     price=price, active=active)
        if not events:
            return grids, None
        ev = self._events(policy, hours, reopened, emp_score, t_kept, s_kept, n_mkt, announced, referral, end_ts, churn_ts, has)
        return grids, ev

    def values_state(self) -> dict:
        """Values world (SimConfig.values_events): company-wide incident / commitment months and times, who cares, complaints.

        Its own random streams (company-wide months from the seed alone, so every block shares them), so
        turning it on leaves every other draw as it was.
        """
        if getattr(self, "_values_cache", None) is not None:
            return self._values_cache
        cfg, n, M = self.cfg, self.n, self.M
        world = np.random.default_rng(np.random.SeedSequence([self.seed_key[0], 104_729]))
        incident = world.random(M) < cfg.values_incident_rate
        commitment = world.random(M) < cfg.values_commitment_rate
        month_len = (self.months[1:] - self.months[:-1]) / np.timedelta64(1, "us")
        inc_ts = self.months[:M] + (world.random(M) * month_len).astype(np.int64) * np.timedelta64(1, "us")
        com_ts = self.months[:M] + (world.random(M) * month_len).astype(np.int64) * np.timedelta64(1, "us")
        r = np.random.default_rng(np.random.SeedSequence([*self.seed_key, 104_729]))
        cares = r.random(n) < cfg.values_care_share
        exposed_inc = incident[None, :] & (self.signup_ts[:, None] < inc_ts[None, :])
        exposed_com = commitment[None, :] & (self.signup_ts[:, None] < com_ts[None, :])
        # complaints: customers who care, after an incident they saw (30%), or now and then (1% a month)
        active = np.arange(M)[None, :] >= self.signup_month[:, None]
        complaint = active & cares[:, None] & (r.random((n, M)) < np.where(exposed_inc, 0.30, 0.01))
        complaint_frac = r.random((n, M))
        event_frac = r.random((n, M, 2))
        self._values_cache = dict(cares=cares, exposed_inc=exposed_inc, exposed_com=exposed_com, inc_ts=inc_ts,
                                  com_ts=com_ts, complaint=complaint, complaint_frac=complaint_frac, event_frac=event_frac)
        return self._values_cache

    def _values(self, P: dict) -> None:
        """Values trust shocks: an ethics incident costs much more trust, and a commitment earns more, for those who care."""
        v = self.values_state()
        care = v["cares"][:, None]
        P["values"] += np.where(v["exposed_inc"], np.where(care, -1.0, -0.1), 0.0)
        P["values"] += np.where(v["exposed_com"], np.where(care, 0.5, 0.05), 0.0)

    @functools.cached_property
    def ids(self) -> pl.Series:
        """The block's customer ids (C0000001, C0000002, ... from `first_id`)."""
        return pl.Series("customer_id", [f"C{self.first_id + i:07d}" for i in range(self.n)], dtype=pl.String)

    def campaign_state(self, c: Campaign) -> tuple[np.ndarray, np.ndarray]:
        """(assigned to treatment and active by the campaign month, would abuse a goodwill credit), per customer."""
        from trustml.campaigns import assign
        treated = assign(self.ids.to_list(), c.share, c.seed) & (self.signup_month <= c.month_in(self.M))
        abuse = np.random.default_rng(np.random.SeedSequence([*self.seed_key, 7919])).random(self.n) < 0.15
        return treated, abuse

    def _campaign(self, c: Campaign, P: dict, price: np.ndarray, n_mkt, t_broken, s_kept) -> np.ndarray:
        m, M = c.month_in(self.M), self.M
        treated, abuse = self.campaign_state(c)
        lo = max(m - 2, 0)
        if c.offer != "goodwill_credit":
            contact = np.where(self.tolerance == 1, -0.6, 0.05) - 0.15 * (n_mkt[:, m] >= self.tolerance)
            P["respect_for_time"][:, m] += np.where(treated, contact, 0.0)
        if c.offer == "service_call":
            recent = self.n_tix[:, lo:m + 1].sum(axis=1) > 0
            P["service_quality"][:, m] += np.where(treated, np.where(recent, 0.7, 0.1), 0.0)
            P["empathy"][:, m] += np.where(treated, 0.2, 0.0)
        elif c.offer == "promise_followup":
            broken = np.zeros((self.n, M))
            np.add.at(broken.ravel(), self.t_cell, t_broken)
            np.add.at(broken.ravel(), self.s_cell, ~s_kept)
            P["promises"][:, m] += np.where(treated, np.where(broken[:, lo:m + 1].sum(axis=1) > 0, 0.9, 0.05), 0.0)
        elif c.offer == "goodwill_credit":
            gain = np.where(treated & ~abuse, 0.35, 0.0)
            P["promises"][:, m] += gain
            P["transparency"][:, m] += gain
        elif c.offer == "discount":
            price = price.copy()
            price[treated, m + 1:m + 4] *= 0.8
        return price

    def _events(self, policy, hours, reopened, emp_score, t_kept, s_kept, n_mkt, announced, referral, end_ts, churn_ts, has):
        M = self.M
        rng = np.random.default_rng(self.time_seed)  # same timestamps for every policy
        out_c, out_t, out_e, out_v = [], [], [], []
        code = {name: i for i, name in enumerate(EVENT_TYPES)}

        def add(cells_or_cust, ts, etype, val=None, by_cell=True):
            cust = cells_or_cust // M if by_cell else cells_or_cust
            out_c.append(cust)
            out_t.append(ts)
            out_e.append(np.full(cust.size, code[etype], dtype=np.uint8))
            out_v.append(np.full(cust.size, np.nan) if val is None else np.asarray(val, dtype=float))

        def at(cells, frac):
            i, m = cells // M, cells % M
            return self.lo[i, m] + (frac * (self.span[i, m] / np.timedelta64(1, "us"))).astype(np.int64) * np.timedelta64(1, "us")

        def count_events(counts, max_counts, etype, value_fn=None):
            # draws are made for the policy-free maximum so a cap never shifts other customers' draws
            cells = np.repeat(np.arange(self.n * M), max_counts.ravel())
            frac = rng.random(cells.size)
            rank = np.arange(cells.size) - np.repeat(np.cumsum(max_counts.ravel()) - max_counts.ravel(), max_counts.ravel())
            vals = value_fn(cells.size, rank, cells) if value_fn else None
            keep = rank < counts.ravel()[cells]
            add(cells[keep], at(cells[keep], frac[keep]), etype, None if vals is None else vals[keep])

        count_events(self.n_use, self.n_use, "usage", lambda k, *_: np.round(np.exp(rng.normal(3.0, 0.6, size=k)), 1))
        # value 1 = the customer engaged with the contact; beyond their tolerance they mostly ignore it
        tol = np.repeat(self.tolerance, M)
        count_events(n_mkt, self.n_mkt, "marketing_contact",
                     lambda k, rank, cells: (rng.random(k) < np.where(rank < tol[cells], 0.6, 0.1)).astype(float))
        opened = at(self.t_cell, self.t_when)
        resolved = opened + (hours * 3600e6).astype(np.int64) * np.timedelta64(1, "us")
        add(self.t_cell, opened, "ticket_opened")
        add(self.t_cell, resolved, "ticket_resolved", np.round(hours, 2))
        add(self.t_cell, resolved, "empathy_score", emp_score)
        csat = self.t_csat_u < 0.4
        csat_score = _clip_score(2.2 + 1.2 * (hours < 24) + 0.5 * (emp_score - 3) - 1.0 * reopened + self.t_csat_noise)
        add(self.t_cell[csat], resolved[csat] + _HOUR, "csat", csat_score[csat])
        add(self.t_cell[reopened], resolved[reopened] + 30 * _HOUR, "ticket_reopened")
        p = self.t_promise
        add(self.t_cell[p], opened[p], "promise_made", self.t_due_days[p])
        add(self.t_cell[p & t_kept], opened[p & t_kept] + self.t_due_days[p & t_kept] * _DAY - _HOUR, "promise_kept")
        add(self.t_cell[p & ~t_kept], opened[p & ~t_kept] + self.t_due_days[p & ~t_kept] * _DAY, "promise_broken")
        s_made = at(self.s_cell, self.s_when)
        add(self.s_cell, s_made, "promise_made", self.s_due_days)
        add(self.s_cell[s_kept], s_made[s_kept] + self.s_due_days[s_kept] * _DAY - _HOUR, "promise_kept")
        add(self.s_cell[~s_kept], s_made[~s_kept] + self.s_due_days[~s_kept] * _DAY, "promise_broken")
        cells = np.flatnonzero(self.price_rise.ravel())
        ann = announced.ravel()[cells]
        ts = at(cells, rng.random(cells.size))
        pct = np.round(self.price_pct.ravel()[cells], 1)
        add(cells[ann], ts[ann], "price_change_announced", pct[ann])
        add(cells[~ann], ts[~ann], "price_change_unannounced", pct[~ann])
        cells = np.flatnonzero(self.fee.ravel())
        add(cells, at(cells, rng.random(cells.size)), "surprise_fee", self.fee_amount.ravel()[cells])
        cells = np.flatnonzero(self.privacy.ravel())
        add(cells, at(cells, rng.random(cells.size)), "privacy_incident")
        cells = np.flatnonzero(referral.ravel())
        add(cells, at(cells, rng.random(cells.size)), "referral_given")
        if self.cfg.values_events:
            v = self.values_state()
            for key, ts, etype in (("exposed_inc", v["inc_ts"], "ethics_incident"), ("exposed_com", v["com_ts"], "values_commitment")):
                cells = np.flatnonzero(v[key].ravel())
                # the customer hears of it within a few days
                add(cells, ts[cells % M] + (v["event_frac"][..., 0].ravel()[cells] * 5 * 24).astype(np.int64) * _HOUR, etype)
            cells = np.flatnonzero(v["complaint"].ravel())
            ts = at(cells, v["complaint_frac"].ravel()[cells])
            after = v["exposed_inc"].ravel()[cells]   # a complaint about an incident comes after it
            month_end = self.months[cells % M + 1]
            inc = v["inc_ts"][cells % M]
            ts = np.where(after, inc + ((month_end - inc) / np.timedelta64(1, "us") * v["complaint_frac"].ravel()[cells]).astype(np.int64)
                          * np.timedelta64(1, "us"), ts)
            add(cells, ts, "values_complaint")
        cust = np.nonzero(has)[0]
        add(cust, churn_ts[cust], "cancellation", by_cell=False)
        c = np.concatenate(out_c)
        t = np.concatenate(out_t)
        keep = (t < end_ts[c]) | (np.concatenate(out_e) == code["cancellation"])
        return dict(customer=c[keep], timestamp=t[keep], event=np.concatenate(out_e)[keep], value=np.concatenate(out_v)[keep])

    def tables(self, policy: Policy) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        grids, ev = self.play(policy)
        n = self.n
        referred = np.where(self.channel == 2, np.floor(self.referred_by_draw * np.maximum(self.first_id + np.arange(n), 1)).astype(int), -1)
        referred_by = [f"C{r:07d}" if r >= 0 and r < self.first_id + i else None for i, r in enumerate(referred)]
        customers = pl.DataFrame({
            "customer_id": self.ids,
            "signup_date": self.signup_ts.astype("datetime64[D]"),
            "plan": np.array(PLANS)[self.plan],
            "monthly_price": np.round(self.price0, 2),  # price at signup; changes are events
            "channel": np.array(CHANNELS)[self.channel],
            "referred_by": referred_by,
        }, schema_overrides={"referred_by": pl.String})
        dtype = VALUES_EVENT_TYPE_DTYPE if self.cfg.values_events else EVENT_TYPE_DTYPE
        types = pl.Series([t if t in dtype.categories else None for t in EVENT_TYPES], dtype=pl.String).cast(dtype)
        events = pl.DataFrame({   # gathered from the n ids and the event types (not a numpy string per event)
            "customer_id": self.ids.gather(ev["customer"]),
            "timestamp": ev["timestamp"],
            "event_type": types.gather(ev["event"]),
            "value": ev["value"],
        }).with_columns(pl.col("value").fill_nan(None)).sort("customer_id", "timestamp", "event_type", "value", nulls_last=True)
        return customers, events, self.truth(grids)

    def truth(self, grids: dict) -> pl.DataFrame:
        """One row per customer-month while the customer is active at the month start (from `play`'s grids)."""
        M = self.M
        alive = grids["active"] & (np.arange(M)[None, :] <= grids["first_churn_month"][:, None])
        at_start = alive & (self.months[None, :M] > self.signup_ts[:, None])
        ii, mm = np.nonzero(at_start)
        return pl.DataFrame({
            "customer_id": self.ids.gather(ii),
            "month_start": self.months[mm].astype("datetime64[D]"),
            "churn_prob": grids["hazard"][ii, mm],
            "logit": grids["logit"][ii, mm],
            **{f"contrib_{p}": grids["contrib"][p][ii, mm] for p in sorted(grids["contrib"])},
            "churned_this_month": grids["first_churn_month"][ii] == mm,
        })


def _blocks(n_customers: int):
    for b, first in enumerate(range(0, n_customers, CHUNK_SIZE)):
        yield b, first, min(CHUNK_SIZE, n_customers - first)


def leading_customers(n: int) -> pl.Expr:
    """Rows of the first `n` customers (`n` a multiple of `CHUNK_SIZE`): blocks are independent draws seeded by
    (seed, block), so a world of `n` customers holds exactly these customers of any larger world with the same seed,
    and a truth simulated for `n` customers serves them.

    Examples
    --------
    >>> pl.DataFrame({"customer_id": ["C0000001", "C0050000", "C0050001"]}).filter(leading_customers(50_000)).height
    2
    """
    if n % CHUNK_SIZE:
        raise ValueError(f"leading customers come in whole blocks of {CHUNK_SIZE:,}, got {n:,}")
    return pl.col("customer_id") <= f"C{n:07d}"


def simulate(n_customers: int = 20_000, n_months: int = 24, seed: int = 0, *,
             policy: Policy = Policy(), config: SimConfig = SimConfig(), progress: bool = False) -> World:
    """Simulate `n_customers` over `n_months` (in memory). Same seed, same bytes."""
    if n_customers < 1 or n_months < 3:
        raise ValueError(f"need n_customers >= 1 and n_months >= 3, got {n_customers} and {n_months}")
    parts = [_Block(first + 1, n, n_months, seed, b, config).tables(policy) for b, first, n in _iter(n_customers, progress)]
    c, e, t = (pl.concat([p[k] for p in parts]) for k in range(3))
    return World(c, e, t, config, policy, seed, n_months)


def _iter(n_customers, progress):
    blocks = list(_blocks(n_customers))
    if progress:
        from tqdm.auto import tqdm
        return tqdm(blocks, desc="simulating", unit="block")
    return blocks


def true_effects(n_customers: int, n_months: int, seed: int, policies: dict[str, Policy], *,
                 config: SimConfig = SimConfig()) -> pl.DataFrame:
    """True individual effects: churn probability under each policy minus as observed, per customer-month.

    Common random numbers: every draw is shared, only the policy differs.
    """
    out = []
    for b, first, n in _blocks(n_customers):
        block = _Block(first + 1, n, n_months, seed, b, config)
        base = block.truth(block.play(Policy(), events=False)[0])   # truth alone: no event log is drawn
        cols = [base.select("customer_id", "month_start", pl.col("churn_prob").alias("churn_prob_observed"))]
        for name, pol in policies.items():
            t = block.truth(block.play(pol, events=False)[0])
            cols.append(base.select("customer_id", "month_start").join(
                t.select("customer_id", "month_start", pl.col("churn_prob").alias(f"churn_prob_{name}")),
                on=["customer_id", "month_start"], how="left"))
        df = cols[0]
        for extra in cols[1:]:
            df = df.join(extra, on=["customer_id", "month_start"], how="left", maintain_order="left")
        out.append(df)
    df = pl.concat(out)
    return df.with_columns([(pl.col(f"churn_prob_{k}") - pl.col("churn_prob_observed")).alias(f"effect_{k}") for k in policies])


def campaign_effects(n_customers: int, n_months: int, seed: int, campaign: Campaign, *, horizon_months: int = 3,
                     config: SimConfig = SimConfig()) -> pl.DataFrame:
    """The campaign's true individual effects and costs (common random numbers), per customer eligible for it.

    Eligible: signed up by the campaign month and not churned during it. ``effect``: probability of
    churning in the `horizon_months` after the campaign month if offered minus if not (negative =
    the offer keeps them); ``assigned``: the campaign's own random arm; ``cost``: what the offer
    costs for this customer (discount: 20% of 3 months' price; goodwill credit: 10, or 40 for the
    15% who abuse it; calls 15, follow-ups 8). Matches `campaigns.campaign_rows` on the campaign world.

    Examples
    --------
    >>> eff = campaign_effects(400, 8, 0, Campaign("service_call", month=4))
    >>> bool(eff["effect"].min() < 0 < eff["effect"].max())   # persuadables and sleeping dogs
    True
    """
    m, h = campaign.month_in(n_months), horizon_months
    everyone = dataclasses.replace(campaign, share=1.0)
    out = []
    for b, first, n in _blocks(n_customers):
        block = _Block(first + 1, n, n_months, seed, b, config)
        g0, _ = block.play(Policy(), events=False)
        g1, _ = block.play(Policy(campaign=everyone), events=False)
        window = slice(m + 1, min(m + 1 + h, n_months))
        assigned, abuse = block.campaign_state(campaign)
        eligible = (block.signup_month <= m) & (g0["first_churn_month"] > m)
        p0 = 1 - np.prod(1 - g0["hazard"][:, window] * g0["active"][:, window], axis=1)
        p1 = 1 - np.prod(1 - g1["hazard"][:, window] * g1["active"][:, window], axis=1)
        price = g0["price"][:, min(m + 1, n_months - 1)]
        cost = {"service_call": np.full(n, 15.0), "promise_followup": np.full(n, 8.0), "discount": 0.2 * 3 * price,
                "goodwill_credit": np.where(abuse, 40.0, 10.0)}[campaign.offer]
        out.append(pl.DataFrame({"customer_id": block.ids, "assigned": assigned, "p_churn_control": p0, "p_churn_offered": p1,
                                 "effect": p1 - p0, "cost": cost, "monthly_price": price,
                                 "contact_averse": block.tolerance == 1, "abuser": abuse}).filter(pl.Series(eligible)))
    return pl.concat(out)


def _write_parts(out: Path, parts, meta: dict) -> Path:
    """Write (customers, events, truth) blocks as parquet parts into a temp dir, then move it to `out`."""
    import json
    import shutil
    import tempfile
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".trustml-", dir=out.parent))
    try:
        n_customers = n_events = 0
        for k, (customers, events, truth) in enumerate(parts):
            for name, df in (("customers", customers), ("events", events), ("truth", truth)):
                (tmp / name).mkdir(exist_ok=True)
                df.write_parquet(tmp / name / f"part-{k:05d}.parquet")
            n_customers += customers.height
            n_events += events.height
        (tmp / "world.json").write_text(json.dumps({**meta, "n_customers": n_customers, "n_events": n_events}, indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_world(world: World, out: str | Path) -> Path:
    """Write a simulated world's customers, events and truth as parquet under `out`."""
    meta = {"seed": world.seed, "n_months": world.n_months, "policy": dataclasses.asdict(world.policy),
            "as_of": world.as_of.isoformat()}
    return _write_parts(Path(out), [(world.customers, world.events, world.truth)], meta)


def simulate_to_dir(n_customers: int, n_months: int, seed: int, out: str | Path, *, policy: Policy = Policy(),
                    config: SimConfig = SimConfig(), progress: bool = False) -> Path:
    """Simulate block by block straight to parquet: memory stays bounded by one block of customers.

    Writes the same bytes as `write_world(simulate(...))` would hold, split into one part per block.
    """
    if n_customers < 1 or n_months < 3:
        raise ValueError(f"need n_customers >= 1 and n_months >= 3, got {n_customers} and {n_months}")
    as_of = _month_starts(config.start, n_months + 1)[-1].astype(dt.datetime)
    parts = (_Block(first + 1, n, n_months, seed, b, config).tables(policy) for b, first, n in _iter(n_customers, progress))
    meta = {"seed": seed, "n_months": n_months, "policy": dataclasses.asdict(policy), "as_of": as_of.isoformat()}
    return _write_parts(Path(out), parts, meta)


def read_world(path: str | Path, *, lazy: bool = False):
    """Read the contract tables (customers, events) written by `write_world`, `simulate_to_dir` or `trustml simulate`."""
    path = Path(path)
    if not (path / "events").is_dir() or not (path / "customers").is_dir():
        raise FileNotFoundError(f"{path}: not a simulated world (expected customers/ and events/ parquet folders)")
    scan = [pl.scan_parquet(path / name / "*.parquet") for name in ("customers", "events")]
    return tuple(scan) if lazy else tuple(s.collect() for s in scan)


def read_truth(path: str | Path) -> pl.DataFrame:
    return pl.read_parquet(Path(path) / "truth" / "*.parquet")
