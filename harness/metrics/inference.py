"""Metrics of inference cells (:mod:`harness.scenarios.inference`) and their summary tables."""

from __future__ import annotations

from harness.metrics.spec import Benchmark, SummaryTable, m

METRICS = [
    m("quant_bits_per_param", "bits", "neither", "memory", "stored bits per weight of the target layers"),
    m("weight_bytes", "bytes", "lower", "memory", "parameters + buffers + quantization constants, as stored"),
    m("perplexity", "ppl", "lower", "quality",
      "exp(mean NLL) over scored tokens; samples are per-window mean NLL (nats); 95 % interval by a "
      "bootstrap over windows, each weighted by its scored tokens"),
    # The deltas to the reference are not judged; their bases are. While the reference stays put a delta
    # moves exactly with its base, so judging both would count one regression twice, and a relative
    # threshold (the quality kind's) means nothing on a difference that sits near 0.
    m("perplexity_delta_ref", "ppl", "lower", "quality",
      "perplexity minus the reference precision's on the same windows; 95 % interval by a paired bootstrap "
      "over the windows; 0 on the reference cell itself", gate=False),
    m("kl_ref_nats", "nats", "lower", "quality", "KL(reference || this) per position, mean over positions; "
                                                 "samples per window; 95 % interval by a bootstrap over positions",
      stat="mean"),
    m("top1_agreement_ref_ratio", "ratio", "higher", "accuracy", "fraction of positions with the reference's argmax "
                                                                 "token; 95 % interval by a bootstrap over positions"),
    m("text2sql_ex_ratio", "ratio", "higher", "accuracy", "Text2SQL execution accuracy; 95 % Wilson interval"),
    m("text2sql_em_ratio", "ratio", "higher", "accuracy", "exact match; 95 % Wilson interval"),
    m("text2sql_ex_delta_ref", "ratio", "higher", "accuracy",
      "Text2SQL execution accuracy minus the reference precision's on the same questions; 95 % interval by a "
      "paired bootstrap over the questions; 0 on the reference cell itself; not judged, as its base is", gate=False),
    m("output_length_ratio_ref", "ratio", "neither", "quality",
      "completion tokens over the reference's on the Text2SQL prompts; samples are per item"),
    m("prefill_tok_s_bs*", "tok/s", "higher", "speed", "prefill: one forward of batch x prompt tokens", stat="median"),
    m("decode_tok_s_bs*", "tok/s", "higher", "speed", "greedy decode steps with the KV cache", stat="median"),
    # pytest-benchmark's samples (BENCHMARK below); the gate judges decode_tok_s_bs{B}, which it mirrors
    m("decode_step_s", "s", "lower", "speed", "wall seconds per greedy decode step with the KV cache at the "
                                              "first batch size: each timed repeat's decode time / its steps",
      stat="median", gate=False),
    m("quantize_s", "s", "lower", "speed", "making the checkpoint (made now or reused)", gate=False),
    m("quantize_peak_rss_bytes", "bytes", "lower", "memory", "peak RSS of the quantizing process", stat="max", gate=False),
]

TABLES = [
    SummaryTable(scenario="infer", title="Inference: storage and accuracy", columns=(
        "quant_bits_per_param", "quant_bits_per_param_analytic", "weight_bytes", "perplexity", "perplexity_delta_ref",
        "kl_ref_nats", "top1_agreement_ref_ratio", "text2sql_ex_ratio", "text2sql_ex_delta_ref", "text2sql_em_ratio",
        "output_length_ratio_ref"),
        compact=(("quant_bits_per_param", "bits/param"), ("weight_bytes", "weights"), ("perplexity", "ppl"),
                 ("kl_ref_nats", "KL nats"), ("top1_agreement_ref_ratio", "top-1"), ("text2sql_ex_ratio", "SQL EX"))),
    SummaryTable(scenario="infer", title="Inference: speed and memory", columns=(
        "prefill_tok_s_bs*", "decode_tok_s_bs*", "decode_step_s", "load_s", "quantize_s", "peak_rss_bytes", "info:kernel"),
        compact=(("prefill_tok_s_bs*", "prefill tok/s b*"), ("decode_tok_s_bs*", "decode tok/s b*"),
                 ("decode_step_s", "decode step"), ("load_s", "load"), ("peak_rss_bytes", "peak RSS"))),
]
BENCHMARK = Benchmark(scenario="infer", metric="decode_step_s",
                      what="one greedy decode step with the KV cache at the first batch size (mean of a timed repeat)")
