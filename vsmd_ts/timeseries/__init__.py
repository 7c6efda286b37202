"""GluonTS front end: estimator, Lightning module and network (imports gluonts and lightning)."""

from .estimator import PREDICTION_INPUT_NAMES, TRAINING_INPUT_NAMES, CheckMultivariateTarget, VSMDEstimator
from .features import default_lags, normalize_freq
from .lightning_module import VSMDLightningModule
from .module import VSMDModel

__all__ = [
    "CheckMultivariateTarget",
    "PREDICTION_INPUT_NAMES",
    "TRAINING_INPUT_NAMES",
    "VSMDEstimator",
    "VSMDLightningModule",
    "VSMDModel",
    "default_lags",
    "normalize_freq",
]
