"""Building blocks of the strict suite specs: the strict base model and registry-backed unions.

Every spec model forbids unknown keys; an unknown key is reported with the closest allowed name and
the full list of allowed names. A field whose value picks an implementation by its ``kind`` is a
union over everything registered for that axis, so adding an implementation module extends the
schema with no central edit. A field that takes a number, a list or a mapping (a length
distribution) is a :func:`by_shape` union: the input's shape picks one branch, so an error speaks of
that branch alone, never of every branch pydantic tried.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from harness.base.registry import Registry, suggest

SLUG_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
Slug = Annotated[str, Field(pattern=SLUG_PATTERN, max_length=64)]


def _as_custom(err: Any) -> InitErrorDetails:
    msg = err["msg"].removeprefix("Value error, ").replace("{", "{{").replace("}", "}}")
    return InitErrorDetails(type=PydanticCustomError(err["type"], msg), loc=tuple(err["loc"]), input=err.get("input"))


class StrictModel(BaseModel):
    """Base of every spec model: unknown keys are errors that name the closest and the allowed keys.

    Unknown keys are reported together with every other problem of the same mapping (validation goes
    on without them), so one run of ``harness validate`` lists all problems.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @model_validator(mode="wrap")
    @classmethod
    def _reject_unknown_keys(cls, data: Any, handler: Any) -> Any:
        errors: list[InitErrorDetails] = []
        if isinstance(data, dict):
            allowed = sorted(cls.model_fields)
            for key in [k for k in data if k not in cls.model_fields]:
                msg = f"unknown key {str(key)!r}{suggest(str(key), allowed)}; allowed keys: {', '.join(allowed)}"
                errors.append(_as_custom({"type": "unknown_key", "msg": msg, "loc": (key,), "input": data[key]}))
            data = {k: v for k, v in data.items() if k in cls.model_fields}
        try:
            result = handler(data)
        except ValidationError as exc:
            errors += [_as_custom(e) for e in exc.errors()]
            result = None
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return result


class Implementation(StrictModel):
    """Base of a registered implementation's config (a precision, training mode, engine, model source).

    ``kind`` selects the implementation; ``name`` (optional) labels it in cell ids when a suite uses
    the same kind twice with different settings.
    """

    kind: str = Field(description="Which registered implementation this is.")
    name: Slug | None = Field(default=None, description="Label used in cell ids (defaults to kind).")

    @property
    def label(self) -> str:
        return self.name or self.kind


def kind_union(registry: Registry, *, shorthand: Callable[[str], dict] | None = None) -> Any:
    """A pydantic type: the union of every config class registered in ``registry``, by ``kind``.

    A string value is accepted when ``shorthand`` is given (it turns ``"nf4"`` into ``{"kind": "nf4"}``
    or parses a reference). Unknown kinds fail with the closest name and the allowed ones.
    """
    classes = registry.items()
    allowed = sorted(classes)

    def check(value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value
        if isinstance(value, str):
            value = shorthand(value) if shorthand else {"kind": value}
        if not isinstance(value, dict):
            raise PydanticCustomError(
                "not_a_mapping",
                "expected a mapping with a 'kind' key (one of: {allowed}), got {got}",
                {"allowed": ", ".join(allowed), "got": type(value).__name__},
            )
        kind = value.get("kind")
        if kind not in classes:
            what = f"unknown {registry.axis} kind {kind!r}" if kind is not None else f"missing 'kind' for {registry.axis}"
            raise PydanticCustomError(
                "unknown_kind",
                "{what}{hint}; allowed: {allowed}",
                {"what": what, "hint": suggest(str(kind), allowed) if kind else "", "allowed": ", ".join(allowed)},
            )
        return value

    members = tuple(dict.fromkeys(classes[k] for k in allowed))
    if not members:
        raise RuntimeError(f"no {registry.axis} is registered in {registry.package}")
    union = members[0] if len(members) == 1 else Union[members]  # type: ignore[valid-type]
    return Annotated[union, Field(discriminator="kind"), BeforeValidator(check)]


SHAPE_TAG = "shape:"  # prefix of a by_shape branch in an error's location (suite errors leave it out)
_SHAPES = ("one", "list", "mapping")


def by_shape(*, expected: str, one: Any = None, many: Any = None, mapping: Any = None,
             scalars: tuple[type, ...] | None = None) -> Any:
    """A pydantic type: ``one`` for a scalar input, ``many`` for a list, ``mapping`` for a mapping (or a
    model instance), chosen by the input's shape before anything is tried. ``scalars`` (default: any)
    are the Python types of input that ``one`` is tried on (``(int, float)`` for a count, so that a
    word is answered with every allowed form rather than with "not an integer").

    An input of a shape with no branch fails with ``expected {expected}`` (say every allowed form,
    without braces); an input of a given shape fails with that branch's errors only, located under
    ``shape:<one|list|mapping>`` (:data:`SHAPE_TAG`), which suite errors drop from the path.
    """
    branches = {s: t for s, t in zip(_SHAPES, (one, many, mapping)) if t is not None}
    if len(branches) < 2:
        raise ValueError("by_shape needs at least two branches")

    def shape(value: Any) -> str | None:
        kind = ("list" if isinstance(value, (list, tuple))
                else "mapping" if isinstance(value, (dict, BaseModel)) else "one")
        if kind == "one" and scalars is not None and not isinstance(value, scalars):
            return None
        return SHAPE_TAG + kind if kind in branches else None

    members = tuple(Annotated[t, Tag(SHAPE_TAG + s)] for s, t in branches.items())
    union = Union[members]  # type: ignore[valid-type]
    return Annotated[union, Discriminator(shape, custom_error_type="wrong_shape",
                                          custom_error_message=f"expected {expected}")]
