"""trustml: churn and retention prediction organised by customer-trust pillars.

tables -> snapshots/features -> model -> explanations -> economics, one module per stage.
"""

from trustml.contract import ContractError, validate
from trustml.economics import retention_economics
from trustml.explanations import explain, pillar_explanation, pillar_importance, reason_codes
from trustml.features import DEFAULT_SPEC, FeatureRegistry, FeatureSpec, FeatureTable, Snapshots, build_features
from trustml.model import ChurnModel, TrainedModel, temporal_split, train
from trustml.pillars import EVENT_TYPES, PILLARS
from trustml.privacy import pseudonymise
from trustml.simulator import Policy, simulate, true_effects

__version__ = "0.1.0"
__all__ = ["ContractError", "validate", "retention_economics", "explain", "pillar_explanation", "pillar_importance",
           "reason_codes", "DEFAULT_SPEC", "FeatureRegistry", "FeatureSpec", "FeatureTable", "Snapshots", "build_features",
           "ChurnModel", "TrainedModel", "temporal_split", "train", "EVENT_TYPES", "PILLARS", "pseudonymise",
           "Policy", "simulate", "true_effects"]
