"""GluonTS front end: estimator, Lightning module and network (imports gluonts and lightning)."""

import warnings

# GluonTS builds business-day ('B') periods, which pandas >= 2.2 deprecates with a FutureWarning per
# call (hundreds per forecast run); users cannot act on it, so it is silenced for that message only.
warnings.filterwarnings("ignore", ".*(BDay|PeriodDtype\\[B\\]).*", FutureWarning)

from .checks import CheckMultivariateTarget  # noqa: E402
from .estimator import PREDICTION_INPUT_NAMES, TRAINING_INPUT_NAMES, VSMDEstimator  # noqa: E402
from .features import default_lags, normalize_freq  # noqa: E402
from .lightning_module import TrainingDivergedError, VSMDLightningModule  # noqa: E402
from .module import VSMDModel  # noqa: E402
from .predictor import PredictorFileError, PredictorFileNotFoundError, VSMDPredictor  # noqa: E402

__all__ = [
    "CheckMultivariateTarget",
    "PREDICTION_INPUT_NAMES",
    "PredictorFileError",
    "PredictorFileNotFoundError",
    "TRAINING_INPUT_NAMES",
    "TrainingDivergedError",
    "VSMDEstimator",
    "VSMDLightningModule",
    "VSMDModel",
    "VSMDPredictor",
    "default_lags",
    "normalize_freq",
]
