"""Metrics of lm-evaluation-harness tasks (:mod:`harness.measure.lmeval`): ``lmeval_<task>_<metric>``.

One pattern per lm-eval metric whose meaning and direction are fixed by lm-eval itself (``acc`` and
``exact_match`` up, perplexities and bits per byte down), each with its ``_delta_ref`` (the paired
difference to the reference precision on the same documents; not judged, as its base is). A task's
other metrics stay in the record's ``info``. Serving cells (``serving.eval``) carry the same metrics,
scored on the running engine, in a table of their own.
"""

from __future__ import annotations

from harness.metrics.spec import SummaryTable, m

_CI = "95 % interval: lm-eval's stderr x 1.96"
_BASES = [
    ("acc", "ratio", "higher", "accuracy", f"lm-eval accuracy (log-likelihood of the right choice highest); {_CI}"),
    ("acc_norm", "ratio", "higher", "accuracy", f"lm-eval accuracy with length-normalised log-likelihoods; {_CI}"),
    ("exact_match", "ratio", "higher", "accuracy", f"lm-eval exact match of the generated answer; {_CI}"),
    ("word_perplexity", "ppl", "lower", "quality", "lm-eval rolling perplexity per word (no stderr from lm-eval)"),
    ("byte_perplexity", "ppl", "lower", "quality", "lm-eval rolling perplexity per UTF-8 byte (no stderr from lm-eval)"),
    ("bits_per_byte", "bits/byte", "lower", "quality", "lm-eval rolling bits per UTF-8 byte (no stderr from lm-eval)"),
    ("perplexity", "ppl", "lower", "quality", f"lm-eval perplexity of the target continuation; {_CI}"),
]

METRICS = [
    spec
    for base, unit, direction, kind, text in _BASES
    for spec in (
        m(f"lmeval_*_{base}", unit, direction, kind, text),  # type: ignore[arg-type]
        m(f"lmeval_*_{base}_delta_ref", unit, direction, kind,  # type: ignore[arg-type]
          f"{base} minus the reference precision's on the same documents (paired bootstrap over documents "
          "for per-document means); not judged, as its base is", gate=False),
    )
]

TABLES = [
    SummaryTable(scenario="infer", title="Inference: lm-eval tasks (value ± lm-eval's stderr; delta: against the "
                                         "reference on the same documents)",
                 columns=("quant_bits_per_param", "lmeval_*"), requires="lmeval_*",
                 compact=(("quant_bits_per_param", "bits/param"), ("lmeval_*", "lm-eval *"))),
    SummaryTable(scenario="serve", title="Serving: lm-eval tasks scored on the running engine (value ± lm-eval's "
                                         "stderr; one scoring per engine start)",
                 columns=("lmeval_*",), requires="lmeval_*", compact=(("lmeval_*", "lm-eval *"),)),
]
