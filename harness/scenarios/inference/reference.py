"""Reference outputs of a suite's reference precision, and the distances of a cell's outputs from them.

Every inference cell is compared with the reference precision on the same tokens: next-token
distributions over the first ``kl_windows`` non-overlapping windows of ``seq_len`` corpus tokens
(KL(reference || cell), mean over positions, in nats; top-1 agreement of the argmax; both kept per
position for their bootstrap intervals), perplexity on the same windows as the cell's (for a
paired difference), and the Text2SQL completions and their scores (output-length ratio, so a
precision that stops early cannot pass as fast; per-question correctness, for a paired EX difference).

The reference outputs are computed once per key (model identity, reference precision, protocol,
folder layout :data:`LAYOUT`, harness code and framework versions) in a child process, and cached
under ``$HARNESS_CACHE_DIR/reference/<key>``. A folder holds ``logprobs.pt`` ([windows, seq_len,
vocab] fp32 log-probs), ``perplexity.json`` (:class:`~harness.measure.quality.Perplexity`: per-window
mean NLL and scored tokens), with Text2SQL ``text2sql.json`` (completions) and ``text2sql_score.json``
(:class:`~harness.measure.text2sql.Score`: ids answered correctly and exactly), with an ``eval`` block
``lmeval.json`` (per task: values, stderr and per-document values, :mod:`harness.measure.lmeval`), and
``meta.json``.
The reference cell itself is compared with them too, which must give zero distance and zero deltas.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness.base.paths import cache_dir, corpus_ids
from harness.measure import intervals

if TYPE_CHECKING:
    from harness.base.resolved import ResolvedModel
    from harness.measure.quality import Perplexity
    from harness.measure.text2sql import Score
    from harness.spec.cell import Cell

LAYOUT = 2  # what a folder holds; 2 added perplexity.json and text2sql_score.json (older folders are remade)
LOGPROBS = "logprobs.pt"
PERPLEXITY = "perplexity.json"
GENERATIONS = "text2sql.json"
SCORE = "text2sql_score.json"
LMEVAL = "lmeval.json"


class Distance(BaseModel):
    """How far a cell's next-token distributions are from the reference's, on the same positions.

    The per-position arrays are the units of the intervals. Positions of one window are not
    independent, so a bootstrap over positions is narrower than one over windows would be; the
    per-window means travel beside it (``kl_window_nats``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    kl_nats: float = Field(description="mean over positions of KL(reference || cell), nats")
    kl_window_nats: list[float] = Field(description="per-window means")
    top1_agreement: float = Field(description="fraction of positions where the argmax token is the same")
    positions: int
    kl_per_position: np.ndarray = Field(description="KL(reference || cell) per position, nats, [windows, positions]")
    top1_per_position: np.ndarray = Field(description="argmax agrees (bool) per position, [windows, positions]")

    def kl_interval(self, *, seed: int = intervals.SEED, n: int = intervals.RESAMPLES) -> tuple[float, float]:
        """95 % bootstrap interval of :attr:`kl_nats` over positions."""
        return intervals.bootstrap(self.kl_per_position.ravel(), seed=seed, n=n)

    def top1_interval(self, *, seed: int = intervals.SEED, n: int = intervals.RESAMPLES) -> tuple[float, float]:
        """95 % bootstrap interval of :attr:`top1_agreement` over positions."""
        return intervals.bootstrap(self.top1_per_position.ravel(), seed=seed, n=n)


def window_logprobs(model: Any, ids: list[int], seq_len: int, windows: int, device: str) -> Any:
    """fp32 log-softmax of the next-token logits, shape [windows, seq_len, vocab], on CPU.

    Windows are ``ids[k*seq_len:(k+1)*seq_len]``. Raises ValueError if the text is too short.
    """
    import torch

    if len(ids) < windows * seq_len:
        raise ValueError(f"KL needs {windows} windows of {seq_len} tokens but the corpus has {len(ids)} tokens")
    out = []
    with torch.inference_mode():
        for k in range(windows):
            x = torch.tensor([ids[k * seq_len:(k + 1) * seq_len]], device=device)
            out.append(torch.log_softmax(model(input_ids=x).logits.float(), dim=-1)[0].cpu())
    return torch.stack(out)


def distance(ref: Any, cell: Any) -> Distance:
    """KL(ref || cell) and top-1 agreement of two [windows, positions, vocab] log-prob tensors."""
    import torch

    if ref.shape != cell.shape:
        raise ValueError(f"log-prob shapes differ: reference {tuple(ref.shape)}, cell {tuple(cell.shape)}")
    for name, t in (("reference", ref), ("cell", cell)):
        bad = (~torch.isfinite(t).all(dim=-1).all(dim=-1)).nonzero().flatten().tolist()
        if bad:  # NaN logits would give a NaN KL and a meaningless argmax
            raise ValueError(f"the {name}'s next-token log-probs are not finite in window(s) {bad}")
    kl = torch.sum(ref.exp() * (ref - cell), dim=-1)  # [windows, positions]
    same = ref.argmax(-1) == cell.argmax(-1)
    return Distance(kl_nats=kl.mean().item(), kl_window_nats=kl.mean(dim=1).tolist(),
                    top1_agreement=same.float().mean().item(), positions=int(kl.numel()),
                    kl_per_position=kl.double().numpy(), top1_per_position=same.numpy())


def _key(cell: "Cell", model: "ResolvedModel", protocol: dict[str, Any]) -> str:
    from harness.base.host import Host
    from harness.results.environment import code_key

    assert cell.reference is not None
    host = Host.detect()  # the same machine: another CPU or GPU may round differently
    desc = {"model": model.identity(), "reference": cell.reference.model_dump(mode="json", exclude={"name"}),
            "protocol": protocol, "layout": LAYOUT, "device": cell.device, "code": code_key(),
            "hardware": [host.cpu_model, host.cpu_count, [g.name for g in host.gpus]]}
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]


def ensure(cell: "Cell", model: "ResolvedModel", protocol: dict[str, Any]) -> tuple[Path, bool]:
    """The folder of reference outputs for ``cell`` under ``protocol`` (made in a child if missing).

    ``protocol``: ``corpus``, ``seq_len``, ``kl_windows``, ``stride`` and ``max_windows`` (the
    perplexity windows), and ``text2sql`` (settings or None). Returns ``(folder, made)``.
    """
    from harness.base.cachedir import build_once
    from harness.base.child import run_child

    assert cell.reference is not None, "inference cells carry their reference precision"
    final = cache_dir() / "reference" / _key(cell, model, protocol)

    def make(tmp: Path) -> None:
        payload = {"cell": cell.model_dump(mode="json"), "model": model.model_dump(mode="json"),
                   "protocol": protocol, "out": str(tmp)}
        answer = run_child("harness.scenarios.inference.reference:build_in_child", payload)
        (tmp / "meta.json").write_text(json.dumps({"protocol": protocol, "layout": LAYOUT,
                                                   "make_s": answer["child_wall_s"], "reference": cell.reference.label}))

    made, _ = build_once(final, make)
    return final, made


def build_in_child(payload: dict[str, Any]) -> dict[str, Any]:
    """Child-process entry: load the reference precision and save its log-probs, perplexity windows,
    and Text2SQL completions with their scores."""
    import torch
    from transformers import AutoTokenizer

    from harness.base.resolved import ResolvedModel
    from harness.measure import text2sql
    from harness.measure.quality import perplexity
    from harness.spec.cell import Cell

    cell = Cell.model_validate(payload["cell"])
    model = ResolvedModel.model_validate(payload["model"])
    protocol, out = payload["protocol"], Path(payload["out"])
    assert cell.reference is not None
    torch.manual_seed(cell.seed)
    prepared = cell.reference.prepare(model, cell)
    lm = cell.reference.load(str(prepared.path), cell.device)
    lm.eval()
    tok = AutoTokenizer.from_pretrained(model.path)
    ids = corpus_ids(tok, protocol["corpus"])
    torch.save(window_logprobs(lm, ids, protocol["seq_len"], protocol["kl_windows"], cell.device), out / LOGPROBS)
    ppl = perplexity(lm, ids, seq_len=protocol["seq_len"], stride=protocol["stride"],
                     max_windows=protocol["max_windows"], device=cell.device, protocol={"corpus": protocol["corpus"]})
    (out / PERPLEXITY).write_text(ppl.model_dump_json())
    if protocol.get("text2sql") is not None:
        s = text2sql.Text2SQLSettings.model_validate(protocol["text2sql"])
        questions = text2sql.items(s.items)
        gens = text2sql.generate(lm, tok, questions, s, cell.device)
        (out / GENERATIONS).write_text(text2sql.dumps(gens))
        (out / SCORE).write_text(text2sql.score(questions, gens).model_dump_json())
    if protocol.get("eval") is not None:
        from harness.measure import lmeval

        settings = lmeval.EvalSettings.model_validate(protocol["eval"]["settings"])
        (out / LMEVAL).write_text(json.dumps(lmeval.evaluate(lm, tok, settings), default=float))
    return {}


def load_lmeval(folder: Path) -> dict[str, Any] | None:
    """The reference's lm-eval result (:func:`harness.measure.lmeval.summarize`), None without an eval block."""
    path = folder / LMEVAL
    return json.loads(path.read_text()) if path.exists() else None


def load_logprobs(folder: Path) -> Any:
    import torch

    return torch.load(folder / LOGPROBS)


def load_generations(folder: Path) -> list[Any] | None:
    from harness.measure import text2sql

    path = folder / GENERATIONS
    return text2sql.loads(path.read_text()) if path.exists() else None


def load_perplexity(folder: Path) -> Perplexity:
    """The reference's perplexity windows. Raises ValueError when the folder predates them."""
    from harness.measure.quality import Perplexity

    return Perplexity.model_validate_json(_require(folder, PERPLEXITY).read_text())


def load_score(folder: Path) -> Score | None:
    """The reference's Text2SQL score (None when the protocol has no Text2SQL).

    Raises ValueError when the folder holds completions but predates their score."""
    from harness.measure.text2sql import Score

    if not (folder / GENERATIONS).exists():
        return None
    return Score.model_validate_json(_require(folder, SCORE).read_text())


def _require(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.exists():
        raise ValueError(f"the reference outputs in {folder} hold no {name} (made by older code, layout < {LAYOUT}); "
                         "delete that folder to have them recomputed")
    return path
