"""The invoke worker: InvokeRequested in, micro-batched model calls, InvokeCompleted/InvokeFailed out.

An asyncio service rather than a Celery task per request (see docs/invoke.md for why).
`run(settings)` blocks until SIGINT/SIGTERM; `serve(settings, stop=...)` is the same as a coroutine
(tests run it in a thread with its own loop). Also runnable as `python -m workers.invoke`.
"""

from workers.invoke.app import run, serve
from workers.invoke.batching import Batch, MicroBatcher
from workers.invoke.service import InvokeService

__all__ = ["Batch", "InvokeService", "MicroBatcher", "run", "serve"]
