"""Metrics every scenario may record (the worker and each scenario's memory tracking)."""

from __future__ import annotations

from harness.metrics.spec import m

METRICS = [
    m("peak_rss_bytes", "bytes", "lower", "memory", "peak resident memory of the cell's process (tree)", stat="max"),
    m("load_s", "s", "lower", "speed", "loading the model in the cell's precision", gate=False),
    m("model_prepare_s", "s", "lower", "speed", "building/converting the model (cache miss)", gate=False),
    # on a CUDA device (harness.measure.gpu): NVML's view beside torch's allocator, over the whole cell
    m("gpu_process_peak_bytes", "bytes", "lower", "memory",
      "peak GPU memory of the cell's process tree as NVML reports it (engine workers included)", stat="max"),
    m("gpu_device_used_peak_bytes", "bytes", "lower", "memory",
      "peak used memory of the whole GPU (NVML), other processes and the driver's own included", stat="max", gate=False),
    m("cuda_max_allocated_bytes", "bytes", "lower", "memory",
      "torch.cuda.max_memory_allocated over the cell (this process)", stat="max"),
    m("cuda_max_reserved_bytes", "bytes", "lower", "memory",
      "torch.cuda.max_memory_reserved over the cell (this process): what the caching allocator held", stat="max"),
    m("energy_j", "J", "lower", "energy", "GPU energy over the cell's timed regions (NVML total-energy counter)",
      stat="sum"),
    m("energy_j_per_step", "J", "lower", "energy", "GPU energy per measured optimizer step (NVML)", stat="mean"),
    m("energy_j_per_output_token", "J", "lower", "energy",
      "GPU energy over the timed passes / output tokens they generated (NVML)", stat="mean"),
]
