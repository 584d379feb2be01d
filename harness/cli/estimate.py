"""``harness estimate``: the analytic memory prediction from a model's config, with options declared once
on :class:`~harness.analytic.estimate.EstimateInput`. Exit 0, 2 on bad input."""

from __future__ import annotations

import json
from typing import Any, Optional

import typer

from harness.cli import app, err, out


def _flag(field: str, *names: str, help: str | None = None) -> Any:
    """A ``harness estimate`` option for an :class:`~harness.analytic.estimate.EstimateInput` field: its
    default and help text are the field's own (declared once, there)."""
    from harness.analytic.estimate import EstimateInput

    info = EstimateInput.model_fields[field]
    default = info.get_default(call_default_factory=True)
    if isinstance(default, list):
        default = ",".join(default)
    return typer.Option(default, *(names or (f"--{field.replace('_', '-')}",)), help=help or info.description)


@app.command()
def estimate(
    model: Optional[str] = typer.Argument(None, help="config.json, a folder with one, or a model reference "
                                                     "(embedded, tiny, local:PATH, hub:ORG/NAME); or use --params."),
    params: Optional[int] = typer.Option(None, "--params", help="A bare parameter count instead of a model."),
    dtype: str = _flag("dtype"),
    train: str = _flag("train"),
    lora_r: int = _flag("lora_r"),
    lora_targets: str = _flag("lora_targets", help="Comma-separated names of the Linear modules that get adapters."),
    optimizer: str = _flag("optimizer"),
    mixed_precision: bool = _flag("mixed_precision"),
    zero_stage: int = _flag("zero_stage"),
    world_size: int = _flag("world_size"),
    quant: str = _flag("quant"),
    quant_config: Optional[str] = typer.Option(None, "--quant-config", help="The --quant precision's settings as a "
                                                                            "JSON object, e.g. '{\"group_size\": 32}'."),
    double_quant: bool = _flag("double_quant"),
    batch: Optional[int] = _flag("batch"),
    seq: Optional[int] = _flag("seq"),
    gradient_checkpointing: bool = _flag("gradient_checkpointing"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (bytes and counts)."),
) -> None:
    """Predict parameter, gradient, optimizer, activation and KV-cache memory without running the model."""
    from pydantic import ValidationError

    from harness.analytic.estimate import EstimateInput
    from harness.analytic.estimate import estimate as predict
    from harness.analytic.shape import ModelShape
    from harness.base.errors import HarnessError

    if (model is None) == (params is None):
        err.print("[red]error[/red] give a model (config.json, a folder, or a reference) or --params N, not both",
                  highlight=False)
        raise typer.Exit(2)
    flags = {k: v for k, v in locals().items() if k in EstimateInput.model_fields}
    flags["lora_targets"] = [t for t in lora_targets.split(",") if t]
    try:
        flags["quant_config"] = json.loads(quant_config) if quant_config else {}
    except json.JSONDecodeError as exc:
        err.print(f"[red]error[/red] --quant-config: not a JSON object: {exc}", highlight=False)
        raise typer.Exit(2)
    try:
        inp = EstimateInput(**flags)
        shape = ModelShape.from_params(params) if params is not None else ModelShape.load(model)  # type: ignore[arg-type]
        result = predict(shape, inp)
    except ValidationError as exc:
        for e in exc.errors():
            flag = "--" + str(e["loc"][0]).replace("_", "-") if e["loc"] else "options"
            err.print(f"[red]error[/red] {flag}: {e['msg'].removeprefix('Value error, ')}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    except HarnessError as exc:
        from rich.markup import escape

        err.print(f"[red]error[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    from harness.track.summary import print_estimate

    print_estimate(result, out)
