"""trustml: churn and retention prediction organised by customer-trust pillars.

tables -> snapshots/features -> model -> explanations -> what-if -> reports, one module per stage.
`Study` runs them on the simulated trust world or on your own data read through a mapping.
"""

from trustml import (  # noqa: F401  (tm.<stage>)
    economics,
    evaluate,
    explanations,
    features,
    leakage,
    mapping,
    model,
    monitor,
    survival,
    tracking,
    whatif,
)
from trustml.contract import ContractError, validate
from trustml.economics import Assumptions, retention_economics
from trustml.explanations import explain, pillar_explanation, pillar_importance, reason_codes
from trustml.explorer import Explorer
from trustml.features import DEFAULT_SPEC, VALUES_SPEC, FeatureRegistry, FeatureSpec, FeatureTable, Snapshots, build_features
from trustml.mapping import Mapping, load_mapping
from trustml.model import ChurnModel, TrainedModel, temporal_split, train, tune
from trustml.pillars import EVENT_TYPES, PILLARS
from trustml.privacy import pseudonymise
from trustml.simulator import Policy, SimConfig, simulate, true_effects
from trustml.study import Study, setup_notebook
from trustml.survival import CLVAssumptions, fit_survival, pillar_survival
from trustml.whatif import LeverCost, campaign, cheapest_plan, levers, what_if

__version__ = "0.3.0"
__all__ = ["ContractError", "validate", "Assumptions", "retention_economics", "explain", "pillar_explanation",
           "pillar_importance", "reason_codes", "DEFAULT_SPEC", "VALUES_SPEC", "SimConfig", "FeatureRegistry", "FeatureSpec", "FeatureTable",
           "Snapshots", "build_features", "Mapping", "load_mapping", "ChurnModel", "TrainedModel", "temporal_split",
           "train", "EVENT_TYPES", "PILLARS", "pseudonymise", "Policy", "simulate", "true_effects", "Study",
           "setup_notebook", "Explorer", "LeverCost", "campaign", "cheapest_plan", "levers", "what_if", "tune",
           "CLVAssumptions", "fit_survival", "pillar_survival"]
