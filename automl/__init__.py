"""AutoML Hub: the domain library (engine, CLI, storage, metadata, jobs, tenants).

`AutoML` is imported on first use (PEP 562), so that the platform service can
use settings, storage and metadata without loading the scientific stack.
"""

__all__ = ["AutoML"]
__version__ = "0.1.0"


def __getattr__(name):
    if name == "AutoML":
        from .engine import AutoML

        return AutoML
    raise AttributeError(f"module 'automl' has no attribute {name!r}")
