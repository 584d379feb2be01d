"""The key check vLLM's server runs on every request: ``vllm serve --middleware harness.engines.vllm_guard.RequireKey``.

vLLM's own ``--api-key`` (or ``VLLM_API_KEY``) guards only the paths under ``/v1``, ``/v2``,
``/inference`` and ``/cohere``: ``/health``, ``/metrics``, ``/invocations`` (inference again), the
elastic-scaling routes and every route of dev mode (``/reset_prefix_cache``, ``/collective_rpc``,
``/sleep``, ``/update_weights`` ...) answer anyone who can reach the port. :class:`RequireKey` is the
outermost ASGI middleware (vLLM adds ``--middleware`` entries last) and refuses every HTTP request
and websocket, on every path and method, that does not carry ``Authorization: Bearer <key>``, the key
being the server's ``VLLM_API_KEY`` (given through the environment, never the command line, which
any user of the machine can read): HTTP 401 with ``{"error": "Unauthorized"}``, a websocket is closed
before it opens. Comparison is of SHA-256 digests in constant time. Imports nothing but the standard
library, in vLLM's API-server process.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from typing import Any, Awaitable, Callable

KEY_ENV = "VLLM_API_KEY"
_REFUSED = b'{"error": "Unauthorized"}'

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class RequireKey:
    """ASGI middleware: only requests bearing the key reach ``app``. Raises RuntimeError at the server's
    start when ``VLLM_API_KEY`` is unset or empty (a server without a key must not start)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        key = os.environ.get(KEY_ENV, "")
        if not key:
            raise RuntimeError(f"harness.engines.vllm_guard.RequireKey needs the server's key in {KEY_ENV}")
        self.app = app
        self._digest = hashlib.sha256(b"Bearer " + key.encode()).digest()

    def _allowed(self, scope: Scope) -> bool:
        given = b""
        for name, value in scope.get("headers") or ():
            if name.lower() == b"authorization":
                given = value
                break
        return secrets.compare_digest(hashlib.sha256(given).digest(), self._digest)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)  # "lifespan" (start-up and shut-down) carries no request
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(_REFUSED)).encode()),
                                    (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": _REFUSED})
        else:
            await send({"type": "websocket.close", "code": 1008})  # policy violation, before accept
