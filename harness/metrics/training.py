"""Metrics of training cells (:mod:`harness.scenarios.training`) and their summary tables.

The anatomy (``params_bytes`` ... ``anatomy_total_bytes``, ``trainable_params``, ``params``) is recorded
beside its ``*_analytic`` prediction and ``*_residual``, which the catalog derives from these."""

from __future__ import annotations

from harness.metrics.spec import Benchmark, SummaryTable, m

ANATOMY = ("params_bytes", "grads_bytes", "optimizer_bytes", "activation_saved_bytes", "anatomy_total_bytes")

METRICS = [
    m("loss", "nats", "lower", "quality", "mean token cross-entropy of the last step; samples: every step, warm-up first"),
    m("step_time_ms", "ms", "lower", "speed", "optimizer step time (all micro-batches)", stat="median"),
    m("train_tok_s", "tok/s", "higher", "speed", "tokens per step / median step time", stat="median"),
    m("mfu_ratio", "ratio", "higher", "speed", "(4 x params + 2 x trainable) x tokens/s over the device's peak FLOP/s",
      stat="median"),
    m("trainable_params", "count", "neither", "count", "parameters the optimizer updates"),
    m("params", "count", "neither", "count", "parameters as the model defines them (4-bit weights unpacked)"),
    m("params_bytes", "bytes", "lower", "memory", "parameter storages with their quantization constants"),
    m("params_bytes_at_rest", "bytes", "lower", "memory", "parameter bytes per rank between steps (sharded by FSDP)",
      stat="max"),
    m("grads_bytes", "bytes", "lower", "memory", "gradients of the trainable parameters"),
    m("optimizer_bytes", "bytes", "lower", "memory", "optimizer state"),
    m("activation_saved_bytes", "bytes", "lower", "memory",
      "storages autograd saved for backward in one micro-batch, parameters excluded", stat="max"),
    m("anatomy_total_bytes", "bytes", "lower", "memory", "parameters + gradients + optimizer state + saved activations"),
    m("*_peak_alloc_bytes", "bytes", "lower", "memory",
      "peak bytes allocated above the step's start during a phase (profiler allocation events)", stat="max"),
    m("cuda_*_max_allocated_bytes", "bytes", "lower", "memory",
      "torch.cuda.max_memory_allocated over a phase (reset at its start)", stat="max"),
    m("cuda_*_max_reserved_bytes", "bytes", "lower", "memory",
      "torch.cuda.max_memory_reserved over a phase (reset at its start)", stat="max"),
]

TABLES = [
    SummaryTable(scenario="train", title="Training", columns=(
        "loss", "step_time_ms", "train_tok_s", "mfu_ratio", "trainable_params", "backward_peak_alloc_bytes",
        "step_peak_alloc_bytes", "peak_rss_bytes"),
        compact=(("loss", "loss"), ("step_time_ms", "step"), ("train_tok_s", "tok/s"), ("trainable_params", "trainable"),
                 ("step_peak_alloc_bytes", "step peak"), ("peak_rss_bytes", "peak RSS"))),
]
BENCHMARK = Benchmark(scenario="train", metric="step_time_ms",
                      what="one optimizer step, all micro-batches (every measured step; rank 0's under a parallel engine)")
