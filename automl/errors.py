"""Exceptions that carry a catalogue code, so each interface can render them."""

from __future__ import annotations

from .i18n import message


class AutoMLError(Exception):
    """An error a person can act on: `code` + `params`, text from the catalogue."""

    def __init__(self, code: str, **params):
        self.code = code
        self.params = params
        super().__init__(code)

    def message(self, lang: str | None = None) -> str:
        return message(self.code, lang, **self.params)

    def __str__(self) -> str:
        return self.message()


class DataError(AutoMLError, ValueError):
    """The data cannot be used as given."""


class ParameterError(AutoMLError, ValueError):
    """A parameter of AutoML is out of its domain."""


class NotFittedError(AutoMLError, AttributeError):
    """The model is used before `fit`."""


class ModelFileError(AutoMLError, ValueError):
    """A model file cannot be loaded."""
