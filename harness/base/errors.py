"""Errors the harness raises on purpose, each naming what is wrong, where, and what is allowed."""

from __future__ import annotations


class HarnessError(Exception):
    """Base class of the harness' own errors (shown to users without a traceback)."""


class UnknownNameError(HarnessError, KeyError):
    """A name looked up in a registry (method, engine, model...) does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""
