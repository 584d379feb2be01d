"""Accuracy measurements of a causal LM on shipped text (torch imported lazily).

Perplexity protocol: the corpus is tokenized without special tokens; windows of ``seq_len`` tokens
start every ``stride`` tokens (at most ``max_windows`` of them); in each window only the tokens not
scored by the previous window count (all but the first when ``stride == seq_len``). Perplexity is
exp(total NLL / scored tokens), in nats. The protocol travels with the number, and its 95 % interval
is a bootstrap over the windows, each weighted by the tokens it scored (:meth:`Perplexity.interval`).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field

from harness.measure.intervals import RESAMPLES, SEED, perplexity_bootstrap


class Perplexity(BaseModel):
    value: float
    window_nll: list[float] = Field(description="per-window mean NLL over the window's scored tokens, nats")
    window_tokens: list[int] = Field(description="tokens each window scored (the bootstrap's weights)")
    scored_tokens: int
    protocol: dict[str, Any]

    def interval(self, *, seed: int = SEED, n: int = RESAMPLES) -> tuple[float, float]:
        """The 95 % bootstrap interval of :attr:`value` over the windows (see :mod:`harness.measure.intervals`)."""
        return perplexity_bootstrap(self.window_nll, self.window_tokens, seed=seed, n=n)


def perplexity(model: Any, ids: list[int], *, seq_len: int, stride: int, max_windows: int, device: str,
               protocol: dict[str, Any] | None = None) -> Perplexity:
    """Perplexity of ``model`` on token ids ``ids`` under the module's windowing protocol.

    Raises ValueError if the text is shorter than one window.
    """
    import torch

    if len(ids) < seq_len + 1:
        raise ValueError(f"text has {len(ids)} tokens, fewer than seq_len+1={seq_len + 1}")
    if stride > seq_len:
        raise ValueError(f"stride ({stride}) must not exceed seq_len ({seq_len})")
    total_nll, total_tokens, window_nll, window_tokens = 0.0, 0, [], []
    prev_end = 0
    with torch.inference_mode():
        for begin in range(0, len(ids) - seq_len + 1, stride):
            if len(window_nll) >= max_windows:
                break
            end = begin + seq_len
            input_ids = torch.tensor([ids[begin:end]], device=device)
            labels = input_ids.clone()
            new = end - max(prev_end, begin)
            labels[:, : seq_len - new] = -100
            logits = model(input_ids=input_ids).logits.float()
            shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
            nll = torch.nn.functional.cross_entropy(
                shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                ignore_index=-100, reduction="sum").item()
            n = int((shift_labels != -100).sum().item())
            total_nll += nll
            total_tokens += n
            window_nll.append(nll / n)
            window_tokens.append(n)
            prev_end = end
    return Perplexity(
        value=math.exp(total_nll / total_tokens), window_nll=window_nll, window_tokens=window_tokens,
        scored_tokens=total_tokens,
        protocol={"seq_len": seq_len, "stride": stride, "windows": len(window_nll), "scored_tokens": total_tokens,
                  "unit": "nats", "special_tokens": False, **(protocol or {})},
    )
