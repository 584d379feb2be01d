"""Drives an OpenAI-compatible completions endpoint with a workload under a load profile.

Each request is sent when its arrival time (:meth:`LoadProfile.arrival_times`) has come and a slot
is free (:meth:`LoadProfile.limit`), as one streamed ``/v1/completions`` call with the prompt as token
ids, ``max_tokens = min_tokens = n`` and ``ignore_eos`` (so every engine generates the same counts).
Timing follows ``vllm bench serve``: a request is submitted when it is sent; every streamed chunk
that carries a choice is a token arrival (TTFT at the first, ITL between chunks); it finishes at its
last chunk; the token count is the server's ``usage.completion_tokens``; the run's duration runs
from the start of the run to the last request's end. A request that gets an HTTP error, no chunk,
or a broken stream is a failed trace with its error, never a lost one. With ``api_key`` every request
carries ``Authorization: Bearer <key>`` (the harness's server refuses any request without it).
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import nullcontext
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

    from harness.base.wire import Request, RequestTrace
    from harness.engines.loadgen import LoadProfile

REQUEST_TIMEOUT_S = 3600.0


async def _one(session: "aiohttp.ClientSession", url: str, model: str, req: "Request", t0: float) -> "RequestTrace":
    from harness.base.wire import RequestTrace

    payload = {"model": model, "prompt": req.prompt_token_ids, "max_tokens": req.output_tokens,
               "min_tokens": req.output_tokens, "ignore_eos": True, "temperature": 0.0, "stream": True,
               "stream_options": {"include_usage": True}}
    sent = time.perf_counter() - t0
    times: list[float] = []
    completion_tokens = None
    error = None
    try:
        async with session.post(url, json=payload) as resp:
            if resp.status != 200:
                error = f"HTTP {resp.status}: {(await resp.text())[:300]}"
            else:
                async for raw in resp.content:
                    line = raw.decode("utf-8", errors="replace").strip()
                    if not line.startswith("data:"):
                        continue  # blank separators and SSE comments (pings)
                    data = line.removeprefix("data:").strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("choices"):
                        times.append(time.perf_counter() - t0)
                    elif chunk.get("usage"):
                        completion_tokens = chunk["usage"].get("completion_tokens")
                if not times:
                    error = "the stream ended without a token"
    except Exception as exc:  # noqa: BLE001 - any transport failure is this request's failure
        error = f"{type(exc).__name__}: {exc}"
    end = times[-1] if times else time.perf_counter() - t0
    return RequestTrace(prompt_tokens=len(req.prompt_token_ids),
                        output_tokens=completion_tokens if completion_tokens is not None else len(times),
                        submitted_s=sent, first_token_s=times[0] if times else None, finished_s=end,
                        token_times_s=times, error=error)


async def _drive(base_url: str, model: str, requests: list["Request"], profile: "LoadProfile",
                 api_key: str | None) -> tuple[list["RequestTrace"], float]:
    import aiohttp

    arrivals = profile.arrival_times(len(requests))
    limit = profile.limit()
    slots = asyncio.Semaphore(limit) if limit else None
    url = base_url.rstrip("/") + "/v1/completions"
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0), headers=headers) as session:
        t0 = time.perf_counter()

        async def scheduled(i: int, req: "Request") -> "RequestTrace":
            await asyncio.sleep(max(0.0, arrivals[i] - (time.perf_counter() - t0)))
            async with slots or nullcontext():
                return await _one(session, url, model, req, t0)

        traces = await asyncio.gather(*(scheduled(i, r) for i, r in enumerate(requests)))
        return list(traces), time.perf_counter() - t0


def drive(base_url: str, model: str, requests: list["Request"], profile: "LoadProfile", *,
          api_key: str | None = None) -> tuple[list["RequestTrace"], float]:
    """Send ``requests`` to ``base_url`` (serving ``model``, with ``api_key`` as bearer token when given)
    under ``profile``; returns one trace per request (in request order) and the run's duration in seconds."""
    return asyncio.run(_drive(base_url, model, requests, profile, api_key))
