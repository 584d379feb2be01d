"""Metrics of inference cells (:mod:`harness.scenarios.inference`) and their summary tables."""

from __future__ import annotations

from harness.metrics.spec import SummaryTable, m

METRICS = [
    m("quant_bits_per_param", "bits", "neither", "memory", "stored bits per weight of the target layers"),
    m("weight_bytes", "bytes", "lower", "memory", "parameters + buffers + quantization constants, as stored"),
    m("perplexity", "ppl", "lower", "quality",
      "exp(mean NLL) over scored tokens; samples are per-window mean NLL (nats)"),
    m("kl_ref_nats", "nats", "lower", "quality", "KL(reference || this) per position, mean over positions; "
                                                 "samples per window", stat="mean"),
    m("top1_agreement_ref_ratio", "ratio", "higher", "accuracy", "fraction of positions with the reference's argmax token"),
    m("text2sql_ex_ratio", "ratio", "higher", "accuracy", "Text2SQL execution accuracy"),
    m("text2sql_em_ratio", "ratio", "higher", "accuracy", "exact match"),
    m("output_length_ratio_ref", "ratio", "neither", "quality",
      "completion tokens over the reference's on the Text2SQL prompts; samples are per item"),
    m("prefill_tok_s_bs*", "tok/s", "higher", "speed", "prefill: one forward of batch x prompt tokens", stat="median"),
    m("decode_tok_s_bs*", "tok/s", "higher", "speed", "greedy decode steps with the KV cache", stat="median"),
    m("quantize_s", "s", "lower", "speed", "making the checkpoint (made now or reused)", gate=False),
    m("quantize_peak_rss_bytes", "bytes", "lower", "memory", "peak RSS of the quantizing process", stat="max", gate=False),
    m("cuda_max_allocated_bytes", "bytes", "lower", "memory", "torch.cuda.max_memory_allocated over the cell", stat="max"),
]

TABLES = [
    SummaryTable(scenario="infer", title="Inference: storage and accuracy", columns=(
        "quant_bits_per_param", "quant_bits_per_param_analytic", "weight_bytes", "perplexity", "kl_ref_nats",
        "top1_agreement_ref_ratio", "text2sql_ex_ratio", "text2sql_em_ratio", "output_length_ratio_ref")),
    SummaryTable(scenario="infer", title="Inference: speed and memory", columns=(
        "prefill_tok_s_bs*", "decode_tok_s_bs*", "load_s", "quantize_s", "peak_rss_bytes", "info:kernel")),
]
