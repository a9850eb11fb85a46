"""Dynamic batching: requests from the event loop wait in a bounded queue; one worker thread takes whatever is waiting
(up to `max_batch_size`) and decodes it as one padded batch with `backend.generate`, while new requests queue for the
next batch. Throughput grows with concurrency because a step of a batch of n costs far less than n steps.

Each request is a `PendingGeneration`: the worker streams its text and its final `Generation` back to the request's
event loop with `loop.call_soon_threadsafe`, and asks its `cancelled` flag at every step, so a client that leaves or a
request that times out stops consuming compute. A bad request fails alone (the inference interface isolates it); an
engine fault fails its batch, never the worker.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque

from ..inference import Generation, GenerationRequest, GenerationSettings, InferenceBackend
from .limits import ServerLimits
from .metrics import ServerMetrics
from .prompts import Prompt

logger = logging.getLogger(__name__)


class QueueFullError(Exception):
    """The queue holds `max_queue` requests already."""


class PendingGeneration:
    """One request handed to the worker. Its `events` queue (on the caller's loop) receives the streamed text pieces
    (str, when `stream`), then the final `Generation`, or the exception that failed its batch."""

    def __init__(self, prompt: Prompt, settings: GenerationSettings, stream: bool) -> None:
        self.prompt = prompt
        self.settings = settings
        self.stream = stream
        self.events: asyncio.Queue[str | Generation | Exception] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stops the request: it is dropped from the queue, or its row stops at the next decoding step."""
        self._cancelled.set()

    def as_request(self) -> GenerationRequest:
        """The inference interface's request, with this request's streaming and cancellation hooks."""
        return GenerationRequest(
            self.prompt.record,
            self.settings,
            on_text=self.send if self.stream else None,
            is_cancelled=self._cancelled.is_set,
            encoded=self.prompt.encoded,
        )

    def send(self, event: str | Generation | Exception) -> None:
        """Hands `event` to the request's loop (from the worker thread); dropped once that loop has closed."""
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:
            self.cancel()


class Batcher:
    """The queue and its worker thread (see the module docstring)."""

    def __init__(self, backend: InferenceBackend, limits: ServerLimits, metrics: ServerMetrics) -> None:
        self.backend = backend
        self.limits = limits
        self.metrics = metrics
        self._waiting: deque[PendingGeneration] = deque()
        self._condition = threading.Condition()
        self._stopping = False
        self._batch: list[PendingGeneration] = []
        self._thread: threading.Thread | None = None
        metrics.watch_queue(lambda: self.queue_depth)

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch."""
        return len(self._waiting)

    @property
    def decoding(self) -> int:
        """Requests in the batch being decoded."""
        return len(self._batch)

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive and not stopping."""
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="llava-qwen3-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Cancels what is waiting, lets the current batch end (its requests are cancelled too) and joins the
        worker."""
        with self._condition:
            self._stopping = True
            for pending in self._batch:
                pending.cancel()
            while self._waiting:
                pending = self._waiting.popleft()
                pending.cancel()
                pending.send(Generation(finish_reason="cancelled"))
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def submit(self, prompt: Prompt, settings: GenerationSettings, stream: bool = False) -> PendingGeneration:
        """Queues a request (call from the event loop); a `QueueFullError` when `max_queue` are waiting already."""
        pending = PendingGeneration(prompt, settings, stream)
        with self._condition:
            if len(self._waiting) >= self.limits.max_queue:
                raise QueueFullError
            self._waiting.append(pending)
            self._condition.notify()
        return pending

    def withdraw(self, pending: PendingGeneration) -> None:
        """Cancels a request; one still waiting leaves the queue at once."""
        pending.cancel()
        with self._condition:
            if pending in self._waiting:
                self._waiting.remove(pending)

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if not batch:  # everything waiting was withdrawn while the worker waited for company
                continue
            try:
                self._decode(batch)
            except Exception:  # the worker outlives anything a batch does
                logger.exception("the batching worker failed on a batch")
            finally:
                self._batch = []

    def _next_batch(self) -> list[PendingGeneration] | None:
        """The next batch (waiting a little for company when the queue is short), or None when stopping."""
        limit = self.limits.max_batch_size
        with self._condition:
            self._condition.wait_for(lambda: self._waiting or self._stopping)
            if self._stopping:
                return None
            if len(self._waiting) < limit and self.limits.batch_wait_ms > 0:
                self._condition.wait_for(
                    lambda: len(self._waiting) >= limit or self._stopping, self.limits.batch_wait_ms / 1000
                )
            self._batch = [self._waiting.popleft() for _ in range(min(limit, len(self._waiting)))]
        return self._batch

    def _decode(self, batch: list[PendingGeneration]) -> None:
        self.metrics.batch_size.observe(len(batch))
        try:
            generations = self.backend.generate([pending.as_request() for pending in batch])
        except Exception as error:
            logger.exception("the %s backend failed on a batch of %d", self.backend.name, len(batch))
            for pending in batch:
                pending.send(error)
            return
        for pending, generation in zip(batch, generations, strict=True):
            self.metrics.generations.labels(generation.finish_reason).inc()
            if generation.finish_reason != "error":
                self.metrics.prompt_tokens.inc(generation.prompt_tokens)
                self.metrics.cached_prompt_tokens.inc(generation.cached_tokens)
                self.metrics.completion_tokens.inc(generation.completion_tokens)
            pending.send(generation)
