"""The AutoML engine: scikit-learn estimator conventions, xgboost at its core."""

from .core import AutoML, cuda_status
from .metrics import METRICS
from .persistence import read_metadata

__all__ = ["AutoML", "METRICS", "cuda_status", "read_metadata"]
