"""Micro-batching off the event loop.

Handlers put jobs on an asyncio queue and await their futures; one collector task takes the first waiting job,
gathers more (whatever their domains) until the batch holds `max_batch` rows or `max_wait` has passed since
it started, and hands the batch to the one worker thread. While the worker runs a batch, new requests queue
up, so under load the next batch fills at once without waiting. The event loop never runs model code: /healthz
and /metrics answer during a long batch. `stop` lets every queued job finish (graceful shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from .metrics import Metrics

log = logging.getLogger("crossrec_peft.serve")


@dataclass(eq=False)
class Job:
    """One request's work. `kind` says which part of the batch runner takes it; `rows` is its weight toward
    max_batch; `alone` jobs (loading a domain) run in a batch of their own."""

    kind: str
    payload: Any
    rows: int = 1
    alone: bool = False
    result: Any = None
    error: BaseException | None = None
    future: asyncio.Future | None = field(default=None, repr=False)


class MicroBatcher:
    def __init__(self, run: Callable[[list[Job]], None], *, max_batch: int, max_wait_s: float, metrics: Metrics):
        self.run, self.max_batch, self.max_wait_s, self.metrics = run, max_batch, max_wait_s, metrics
        self._queue: asyncio.Queue[Job | None] = asyncio.Queue()
        self._carry: Job | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crossrec-worker")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._collect())

    async def submit(self, job: Job) -> Any:
        """Queue `job` and wait for its result (its error is raised here, in the handler)."""
        if self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running")
        job.future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(job)
        self.metrics.queue_depth.set(self._queue.qsize())
        await job.future
        if job.error is not None:
            raise job.error
        return job.result

    async def stop(self) -> None:
        """Finish every queued job, then stop the collector and the worker thread."""
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
        self._executor.shutdown(wait=True)

    async def _next(self, timeout: float | None) -> Job | None | bool:
        """The next job; None at the stop marker; False when `timeout` passes first."""
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            if timeout is not None and timeout <= 0:
                return False
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return False

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._next(None)
            if first is None or first is False:
                break
            batch, rows = [first], first.rows
            deadline = loop.time() + self.max_wait_s
            while not first.alone and rows < self.max_batch:
                job = await self._next(deadline - loop.time())
                if job is False:
                    break
                if job is None:
                    stopping = True
                    break
                if job.alone or rows + job.rows > self.max_batch:
                    self._carry = job  # opens the next batch
                    break
                batch.append(job)
                rows += job.rows
            self.metrics.queue_depth.set(self._queue.qsize())
            started = time.perf_counter()
            try:
                await loop.run_in_executor(self._executor, self.run, batch)
            except BaseException as exc:  # the runner sets per-job errors itself; this is a bug in it
                log.exception("batch failed")
                for job in batch:
                    if job.error is None and job.result is None:
                        job.error = exc
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            self.metrics.batch_rows.observe(rows)
            self.metrics.batch_requests.observe(len(batch))
            for job in batch:
                if job.future is not None and not job.future.done():
                    job.future.set_result(None)
