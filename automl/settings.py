"""The one reader of the environment.

Every component asks this module for its configuration, so that a variable name
of the deployment guide (`.env.example`) appears in exactly one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

LANGUAGES = ("fr", "en")


@dataclass(frozen=True)
class Settings:
    default_language: str = "fr"


def _language(value: str | None) -> str:
    value = (value or "fr").strip().lower()[:2]
    return value if value in LANGUAGES else "fr"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings(default_language=_language(os.environ.get("DEFAULT_LANGUAGE")))
