"""Errors the harness raises on purpose, each naming what is wrong, where, and what is allowed."""

from __future__ import annotations


class HarnessError(Exception):
    """Base class of the harness' own errors (shown to users without a traceback)."""


class UnknownNameError(HarnessError, KeyError):
    """A name looked up in a registry (method, engine, model...) does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(HarnessError, ImportError):
    """An optional framework needed by an implementation is not installed."""


def require(module: str, *, extra: str = "cpu", package: str | None = None):
    """Import ``module`` or raise :class:`MissingDependencyError` with an install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extras
        pkg = package or module.split(".")[0]
        raise MissingDependencyError(
            f"{module!r} is needed here but cannot be imported ({exc}). "
            f"Install it with `pip install '.[{extra}]'` (package {pkg!r})."
        ) from exc
