"""The lazy registries: names resolve with suggestions, ``module:attr`` references load, and a name
registered twice by different implementations is refused."""

from __future__ import annotations

import pytest

from harness.base.errors import UnknownNameError
from harness.base.registry import Registry
from harness.precisions import PRECISIONS
from harness.precisions.dense import Dense


def test_names_resolve_and_unknown_names_suggest():
    assert PRECISIONS.get("bf16") is Dense
    assert {"fp32", "nf4", "gptq", "awq", "int8"} <= set(PRECISIONS.names())
    with pytest.raises(UnknownNameError, match=r"unknown precision 'nf5' \(did you mean 'nf4'\?\); allowed: awq, bf16"):
        PRECISIONS.get("nf5")


def test_module_attr_references():
    assert PRECISIONS.get("harness.precisions.dense:Dense") is Dense
    with pytest.raises(UnknownNameError, match="cannot import module 'harness.nosuch'"):
        PRECISIONS.get("harness.nosuch:Thing")
    with pytest.raises(UnknownNameError, match="module 'harness.precisions.dense' has no attribute 'Nope'"):
        PRECISIONS.get("harness.precisions.dense:Nope")
    with pytest.raises(UnknownNameError, match="is not of the form 'package.module:attr'"):
        PRECISIONS.get("harness.precisions.dense:")


def test_a_name_registered_twice_is_refused():
    things: Registry = Registry("thing", "harness.base")

    @things.register("a")
    class First:
        pass

    things.register("a")(First)  # the same implementation again (a module imported twice) is harmless

    with pytest.raises(ValueError, match="thing 'a' is registered twice \\(already by .*First\\)"):
        @things.register("a")
        class Second:
            pass

    assert things.get("a") is First
