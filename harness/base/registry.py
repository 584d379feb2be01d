"""Lazy, decorator-based registries: one per axis (precision, training mode, engine, model source).

Each implementation module registers itself where it lives::

    @PRECISIONS.register("nf4")
    class NF4(Precision): ...

A registry knows the package that holds its implementations and imports that package's modules on
first lookup (they import no heavy framework at module level, so this is cheap). Outside code can
also name an implementation directly as ``"package.module:attr"``. Unknown names raise
:class:`~harness.base.errors.UnknownNameError` with the closest names ("did you mean ...").
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Callable, Generic, TypeVar

from harness.base.errors import UnknownNameError

T = TypeVar("T")


def suggest(name: str, allowed: list[str] | tuple[str, ...] | set[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest allowed name, or ``""``."""
    close = difflib.get_close_matches(name, sorted(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_attr(spec: str) -> object:
    """Import ``"package.module:attr"`` and return the attribute; errors name the spec."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UnknownNameError(f"{spec!r} is not of the form 'package.module:attr'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownNameError(f"cannot import module {module_name!r} named in {spec!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise UnknownNameError(f"module {module_name!r} has no attribute {attr!r} (from {spec!r})") from exc


class Registry(Generic[T]):
    """Maps names to implementations of one axis; populated by the modules of ``package``."""

    def __init__(self, axis: str, package: str) -> None:
        self.axis = axis
        self.package = package
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Class/function decorator registering the decorated object under ``name``."""

        def deco(obj: T) -> T:
            existing = self._items.get(name)
            if existing is not None and existing is not obj:
                qual = getattr(existing, "__qualname__", existing)
                raise ValueError(f"{self.axis} {name!r} is registered twice (already by {qual})")
            self._items[name] = obj
            return obj

        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__, prefix=f"{self.package}."):
            if not info.name.rsplit(".", 1)[-1].startswith("_"):
                importlib.import_module(info.name)
        self._loaded = True

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._load()
        return sorted(self._items)

    def items(self) -> dict[str, T]:
        self._load()
        return dict(self._items)

    def get(self, name: str) -> T:
        """The implementation registered as ``name`` (or a ``"module:attr"`` reference)."""
        if ":" in name:
            return load_attr(name)  # type: ignore[return-value]
        self._load()
        try:
            return self._items[name]
        except KeyError:
            allowed = ", ".join(self.names())
            raise UnknownNameError(
                f"unknown {self.axis} {name!r}{suggest(name, self._items)}; allowed: {allowed}"
            ) from None
