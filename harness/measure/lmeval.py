"""lm-evaluation-harness tasks scored on a model object a cell already loaded, and their metrics.

The suite's ``inference.eval`` and ``serving.eval`` blocks (:class:`EvalSettings`) name tasks: the shipped local tasks
(:data:`SHIPPED`, data under ``harness/data/lmeval``, original and CC0) or any name of lm-eval's own
registry (Hub datasets: GPU runners). :func:`evaluate` hands the loaded model and its tokenizer to
lm-eval's ``HFLM`` (which uses the object as it is: a bitsandbytes or GPTQ model is scored as
loaded, never reloaded) and runs ``lm_eval.simple_evaluate`` with per-document samples kept;
:func:`evaluate_target` scores a started serving engine the same way (vLLM's ``LLM`` through lm-eval's
``vllm`` model, a server through ``local-completions``).

:func:`metrics` turns a result into ``lmeval_<task>_<metric>`` metrics (``<filter>`` before the
metric when it is not ``none``): the value, its 95 % interval from lm-eval's stderr (x 1.96, normal;
lm-eval gives rolling perplexities none), and, given the reference precision's result on the same
documents, ``..._delta_ref``: the difference, with a paired bootstrap over the documents for mean
metrics. Metrics the catalog does not declare (a task's ``f1``, ``bleu``...) stay in ``info`` only.

Needs the ``eval`` extra (``lm_eval``); :func:`missing` says why a cell cannot score without it.
``datasets``' cache is put under ``$HARNESS_CACHE_DIR/datasets``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from harness.base.paths import cache_dir
from harness.base.registry import suggest
from harness.base.wire import EvalTarget
from harness.base.specbase import StrictModel
from harness.measure import intervals

DATA = Path(__file__).resolve().parent.parent / "data" / "lmeval"
BOOTSTRAP_ITERS = 1000  # lm-eval's bootstrap for non-mean metrics; mean metrics get its closed-form stderr
STDERR_CI = "lm-eval stderr x 1.96"  # how an interval made from lm-eval's stderr is named (tables show value ± stderr)

_STRIP = {"regexes_to_ignore": ["\\s"], "ignore_case": True, "ignore_punctuation": True}
SHIPPED: dict[str, dict[str, Any]] = {
    "harness_general_mc": {
        "file": "general_mc.jsonl", "output_type": "multiple_choice",
        "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_choice": "choices", "doc_to_target": "answer",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]},
    "harness_short_answer": {
        "file": "short_answer.jsonl", "output_type": "generate_until",
        "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["\n", ".", ","], "do_sample": False, "max_gen_toks": 8},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True, **_STRIP}]},
    "harness_documents": {
        "file": "documents.jsonl", "output_type": "loglikelihood_rolling",
        "doc_to_text": "", "doc_to_target": "{{text}}",
        "metric_list": [{"metric": "word_perplexity"}, {"metric": "byte_perplexity"}, {"metric": "bits_per_byte"}]},
}
SCORED_THROUGH = {"hf": "hf (lm-eval's HFLM on the loaded model)", "vllm": "vllm (lm-eval's vllm model on the running engine)",
                  "completions": "local-completions (the server's /v1/completions)"}
SHIPPED_VERSION = 1.0  # of the shipped tasks' prompts and data: bump when either changes


class EvalSettings(StrictModel):
    """The suite's ``inference.eval`` block: lm-eval tasks scored on the cell's loaded model."""

    tasks: list[str] = Field(min_length=1, description=f"Shipped tasks ({', '.join(SHIPPED)}) or names of "
                                                       "lm-eval's task registry (Hub datasets).")
    num_fewshot: int | None = Field(default=None, ge=0, description="Few-shot examples (default: each task's own).")
    limit: int | None = Field(default=None, ge=1, description="Documents per task at most (default: all).")
    batch_size: int = Field(default=8, ge=1, description="lm-eval's batch size.")
    seed: int = Field(default=0, description="lm-eval's random, numpy, torch and few-shot seeds.")

    @field_validator("tasks")
    @classmethod
    def _known(cls, tasks: list[str]) -> list[str]:
        for name in tasks:
            if name.startswith("harness_") and name not in SHIPPED:
                raise ValueError(f"unknown shipped task {name!r}{suggest(name, set(SHIPPED))}; "
                                 f"shipped tasks: {', '.join(SHIPPED)}")
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be distinct, got {tasks}")
        return tasks

    def protocol(self) -> dict[str, Any]:
        """What the scores depend on besides the model (the reference outputs' key includes it): the settings
        (``settings``, which :meth:`model_validate` reads back) and the harness' own constants."""
        return {"settings": self.model_dump(mode="json"), "bootstrap_iters": BOOTSTRAP_ITERS,
                "shipped_version": SHIPPED_VERSION}


def missing() -> str | None:
    """Why lm-eval tasks cannot be scored here (None when ``lm_eval`` is importable)."""
    if importlib.util.find_spec("lm_eval") is None:
        return "lm-eval is not installed (pip install '.[eval]')"
    return None


def registry_names() -> set[str]:
    """Task, group and tag names of the installed lm-eval's own task registry, read from its YAML files
    without importing it (planning needs no torch). Empty when lm-eval is not installed."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        return set()
    names: set[str] = set()
    pattern = re.compile(r"^(?:task|group|tag):\s*(?:\[(.*)\]|(\S+))\s*$", re.M)
    for root in spec.submodule_search_locations:
        for path in (Path(root) / "tasks").rglob("*.yaml"):
            for listed, single in pattern.findall(path.read_text(errors="replace")):
                for n in (listed.split(",") if listed else [single]):
                    if n.strip().strip("'\""):
                        names.add(n.strip().strip("'\""))
    return names


def task_config(name: str) -> dict[str, Any] | str:
    """What ``simple_evaluate`` takes for ``name``: a shipped task's config (its data file keyed by split,
    so ``datasets`` makes a ``test`` split), else the registry name itself."""
    if name not in SHIPPED:
        return name
    cfg = {k: v for k, v in SHIPPED[name].items() if k != "file"}
    return {"task": name, "dataset_path": "json", "test_split": "test",
            "dataset_kwargs": {"data_files": {"test": str(DATA / SHIPPED[name]["file"])}},
            "metadata": {"version": SHIPPED_VERSION}, **cfg}


def evaluate(lm: Any, tokenizer: Any, settings: EvalSettings) -> dict[str, Any]:
    """Score the loaded ``lm`` on ``settings``' tasks; the result as :func:`summarize` makes it."""
    return evaluate_target(EvalTarget(kind="hf", model=lm, tokenizer=tokenizer), settings)


def evaluate_target(target: EvalTarget, settings: EvalSettings) -> dict[str, Any]:
    """Score a started engine (:class:`~harness.base.wire.EvalTarget`) on ``settings``' tasks: a loaded
    transformers model through ``HFLM``, a running ``vllm.LLM`` through lm-eval's ``vllm`` model (given
    that very engine, see :func:`vllm_lm`), a server through ``local-completions`` at its own endpoint
    with its key. The result as :func:`summarize` makes it."""
    os.environ.setdefault("HF_DATASETS_CACHE", str(cache_dir() / "datasets"))
    result = _simple_evaluate(lm_for(target, settings), settings)
    for task in result.values():
        task["protocol"]["scored_through"] = SCORED_THROUGH[target.kind]
    return result


def lm_for(target: EvalTarget, settings: EvalSettings) -> Any:
    """lm-eval's model object for ``target``."""
    if target.kind == "hf":
        from lm_eval.models.huggingface import HFLM

        return HFLM(pretrained=target.model, tokenizer=target.tokenizer, batch_size=settings.batch_size)
    if target.kind == "vllm":
        return vllm_lm(target, settings)
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    return LocalCompletionsAPI(base_url=f"{target.base_url}/v1/completions", model=target.served_name,
                               tokenizer=target.tokenizer, tokenizer_backend="huggingface", tokenized_requests=True,
                               header={"Authorization": f"Bearer {target.api_key}"}, max_length=target.max_length,
                               batch_size=settings.batch_size, seed=settings.seed, max_retries=1)


def vllm_lm(target: EvalTarget, settings: EvalSettings) -> Any:
    """lm-eval's ``vllm`` model on the running engine ``target.model``, not a second one.

    lm-eval 0.4.13's ``VLLM`` builds its engine with ``LLM(**model_args)`` in its constructor and takes
    no engine object; its constructor is run unchanged with that one call answered by the running
    engine (the seam, pinned with lm-eval and tested by tests/test_lmeval.py). The CPU build's version
    lookup is answered first (:func:`harness.engines.vllm_cli.answer_vllm_version`)."""
    from harness.engines.vllm_cli import answer_vllm_version

    answer_vllm_version()
    import importlib.metadata

    from lm_eval.models import vllm_causallms

    vllm_causallms.version = importlib.metadata.version  # bound at its import, which may have come first
    built = vllm_causallms.LLM
    vllm_causallms.LLM = lambda **_: target.model  # type: ignore[assignment]
    try:
        lm = vllm_causallms.VLLM(pretrained=target.tokenizer, tokenizer=target.tokenizer, max_model_len=target.max_length,
                                 batch_size=settings.batch_size, seed=settings.seed)
    finally:
        vllm_causallms.LLM = built
    if lm.model is not target.model:
        raise RuntimeError("lm-eval's vllm model did not take the running engine (its constructor changed)")
    return lm


def _simple_evaluate(model: Any, settings: EvalSettings) -> dict[str, Any]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    seed = settings.seed
    # shipped tasks are whole configs: lm-eval's index of its ~12,000 task files is built only for registry names
    manager = TaskManager(include_defaults=not all(t in SHIPPED for t in settings.tasks))
    out = lm_eval.simple_evaluate(model=model, tasks=[task_config(t) for t in settings.tasks], task_manager=manager,
                                  num_fewshot=settings.num_fewshot, limit=settings.limit, log_samples=True,
                                  bootstrap_iters=BOOTSTRAP_ITERS, random_seed=seed, numpy_random_seed=seed,
                                  torch_random_seed=seed, fewshot_random_seed=seed)
    return summarize(out, settings, lm_eval.__version__)


def summarize(out: dict[str, Any], settings: EvalSettings, version: str) -> dict[str, Any]:
    """lm-eval's result reduced to what a record keeps, per requested task: ``values`` and ``stderr`` by
    metric key (``<metric>`` or ``<filter>_<metric>``), ``higher_is_better``, the per-document values
    (``docs``: metric key -> list, in ``doc_ids`` order) and the ``protocol``."""
    tasks: dict[str, Any] = {}
    for task in settings.tasks:
        row = out["results"].get(task) or out.get("groups", {}).get(task)
        if row is None:
            raise ValueError(f"lm-eval returned no result for task {task!r} (got {sorted(out['results'])})")
        values, stderr = {}, {}
        for key, v in row.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, filt = key.split(",", 1)
            name = metric if filt == "none" else f"{_slug(filt)}_{metric}"
            values[name] = v
            err = row.get(f"{metric}_stderr,{filt}")
            stderr[name] = err if isinstance(err, (int, float)) else None
        samples = sorted(out.get("samples", {}).get(task, []), key=lambda s: s["doc_id"])
        docs: dict[str, list[Any]] = {}
        for s in samples:
            filt = s.get("filter", "none")
            for metric in s.get("metrics", []):
                name = metric if filt == "none" else f"{_slug(filt)}_{metric}"
                v = s[metric]
                docs.setdefault(name, []).append(list(v) if isinstance(v, tuple) else v)
        tasks[task] = {
            "values": values, "stderr": stderr, "higher_is_better": out.get("higher_is_better", {}).get(task, {}),
            "doc_ids": sorted({s["doc_id"] for s in samples}), "docs": docs,
            "protocol": {"task_version": out.get("versions", {}).get(task), "num_fewshot": out.get("n-shot", {}).get(task),
                         "limit": settings.limit, "documents": len({s["doc_id"] for s in samples}),
                         "lm_eval": version, "shipped": task in SHIPPED, "seed": settings.seed,
                         "bootstrap_iters": BOOTSTRAP_ITERS},
        }
    return tasks


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def metric_name(task: str, key: str) -> str:
    return f"lmeval_{_slug(task)}_{key}"


def metrics(result: dict[str, Any], ref: dict[str, Any] | None, ref_label: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(metrics, info)`` of a :func:`summarize` result: each declared metric with its interval, and its
    paired difference to ``ref`` (the reference precision's result) when both scored the same documents."""
    from harness.metrics import metric, spec_for

    out: dict[str, Any] = {}
    undeclared: dict[str, list[str]] = {}
    for task, r in result.items():
        other = (ref or {}).get(task)
        same_docs = other is not None and other["doc_ids"] == r["doc_ids"]
        for key, value in r["values"].items():
            name = metric_name(task, key)
            if spec_for(name) is None or not isinstance(value, (int, float)):
                undeclared.setdefault(task, []).append(key)
                continue
            err, proto = r["stderr"].get(key), r["protocol"]
            ci = None if err is None else (value - intervals.Z95 * err, value + intervals.Z95 * err,
                                           f"{STDERR_CI} (normal), {proto['documents']} documents")
            docs = r["docs"].get(key, [])
            means = [float(d) for d in docs] if docs and all(isinstance(d, (int, float)) for d in docs) else []
            out[name] = metric(name, float(value), samples=means, ci=ci, description=(
                f"lm-eval {task} {key}, {proto['num_fewshot']}-shot, {proto['documents']} documents, "
                f"task version {proto['task_version']}, lm-eval {proto['lm_eval']}"))
            if same_docs and other is not None and key in other["values"]:
                base = other["values"][key]
                ref_docs = other["docs"].get(key, [])
                delta_ci = None
                if means and len(ref_docs) == len(means) and len(means) >= intervals.MIN_UNITS:
                    lo, hi = intervals.paired_bootstrap(means, [float(d) for d in ref_docs])
                    delta_ci = (lo, hi, intervals.bootstrap_method(len(means), "documents", paired=True))
                out[f"{name}_delta_ref"] = metric(f"{name}_delta_ref", float(value) - float(base), ci=delta_ci, description=(
                    f"{key} minus the reference {ref_label}'s ({base:.6g}) on the same {len(r['doc_ids'])} documents"))
    info = {task: {"protocol": r["protocol"], "values": r["values"], "stderr": r["stderr"],
                   "higher_is_better": r["higher_is_better"]} for task, r in result.items()}
    if undeclared:
        info["not_recorded_as_metrics"] = undeclared
    return out, info
