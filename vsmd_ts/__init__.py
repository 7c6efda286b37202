"""vsmd_ts: Variational Schrödinger Momentum Diffusion for multivariate time-series forecasting.

``import vsmd_ts`` stays light: the GluonTS front end (``VSMDEstimator``) is
imported on first use.
"""

__version__ = "0.1.0"

__all__ = ["VSMDEstimator", "VSMDLightningModule", "VSMDModel", "__version__"]


def __getattr__(name):
    if name in ("VSMDEstimator", "VSMDLightningModule", "VSMDModel"):
        from . import timeseries

        return getattr(timeseries, name)
    raise AttributeError(f"module 'vsmd_ts' has no attribute {name!r}")
