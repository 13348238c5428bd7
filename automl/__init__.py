"""AutoML Hub: the domain library (engine, CLI, and later storage, jobs, tenants)."""

from .engine import AutoML

__all__ = ["AutoML"]
__version__ = "0.1.0"
