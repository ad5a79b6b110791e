"""Continuous batching: one thread owns the model and decodes every running request together.

Requests wait in a bounded queue (`submit` raises `QueueFull` when it is full, which the app answers with 429).
Between decode steps the thread admits waiting requests while fewer than `max_batch` rows run: they are prefilled
together in one padded batch (each alone if that fails, so one bad request cannot fail the others) and merged into
the running `DecodeBatch`, where each gets exactly the tokens it would get alone. After every
step each request receives its text delta through its `emit` callback; a request whose client went away is
cancelled and its row leaves the batch at the next step. An exception in one request's prefill fails that request
only; one in a shared decode step fails the rows of that step, and the thread goes on serving.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from auralm.infer.beam import beam_search
from auralm.infer.engine import DecodeBatch, DecodeStep, Row, finish_reason, stack_inputs
from auralm.infer.generate import TextDeltas
from auralm.infer.sampling import GenerationConfig
from auralm.serve.errors import ServeError
from auralm.serve.stops import StopText

log = logging.getLogger("auralm.serve")

_IDLE_WAIT = 0.05  # seconds the idle thread waits for a request before checking for shutdown
MIN_COMPACT = 64  # cache columns no live row uses, before compacting is worth a copy


# ---- what a request receives -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop" (stop token or stop string), "length" (max_tokens reached) or "cancelled"
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    error: ServeError


Event = Delta | Finished | Failed


class QueueFull(Exception):
    """The scheduler's queue holds `max_queue` requests already."""


class Job:
    """One generation request as the scheduler sees it. `emit` is called from the scheduler thread."""

    def __init__(self, inputs: dict[str, torch.Tensor], config: GenerationConfig, emit: Callable[[Event], Any],
                 stop: tuple[str, ...] = (), skip_special_tokens: bool = True):
        if inputs["input_ids"].shape[0] != 1:
            raise ValueError(f"a job holds one prompt, got {inputs['input_ids'].shape[0]}")
        self.inputs = inputs
        self.config = config
        self.emit = emit
        self.stop = stop
        self.skip_special_tokens = skip_special_tokens  # False: a transcription window's language and time tags
        self.prompt_tokens = int(inputs["attention_mask"].sum())
        self.cancelled = False  # set by the request's side when its client goes away
        self.failed = False  # set when the scheduler has sent `Failed`
        self._deltas: TextDeltas | None = None
        self._stop_text = StopText(stop)

    def cancel(self) -> None:
        self.cancelled = True

    # ---- called by the scheduler thread -------------------------------------------------------------------
    def start(self, decode: Callable[[list[int], bool], str]) -> None:
        """`decode(ids, skip_special_tokens)`: the processor's."""
        self._deltas = TextDeltas(lambda ids: decode(ids, self.skip_special_tokens))

    def take(self, token: int) -> bool:
        """Release the text of a new token; True when a stop string has ended the answer."""
        text = self._stop_text.push(self._deltas.push(token))
        if text:
            self._send(Delta(text))
        return self._stop_text.stopped

    def finish(self, row: Row) -> None:
        if self.cancelled:
            self._send(Finished("cancelled", self.prompt_tokens, len(row.new_tokens)))
            return
        tail = self._stop_text.push(self._deltas.flush())
        tail += self._stop_text.flush()
        if tail:
            self._send(Delta(tail))
        # A stop string may complete only in the flushed tail; otherwise the row ended by the engine's rule.
        reason = "stop" if self._stop_text.stopped else finish_reason(self.config, row.new_tokens)
        assert reason is not None, "a row that no stop string ended must have ended by the stopping rule"
        self._send(Finished(reason, self.prompt_tokens, len(row.new_tokens)))

    def fail(self, error: ServeError) -> None:
        self.failed = True
        self._send(Failed(error))

    def _send(self, event: Event) -> None:
        try:
            self.emit(event)
        except RuntimeError:  # the request's event loop is gone: nobody is listening any more
            self.cancelled = True


@dataclass
class SchedulerStats:
    """Counters of the scheduler thread (read them from any thread; only that thread writes them)."""

    generated_tokens: int = 0  # tokens chosen, over all requests (one per row per step, plus each prefill's)
    steps: int = 0  # decode steps run
    row_steps: int = 0  # rows decoded, summed over steps; row_steps / steps is the mean batch size
    max_rows: int = 0  # the largest batch decoded in one step
    prefills: int = 0  # requests prefilled
    batched_prefills: int = 0  # prefill passes that held more than one request
    merges: int = 0  # times new requests joined a batch that was already decoding
    compactions: int = 0  # cache compactions (columns of finished rows given back)
    completed: int = 0  # requests that ended with "stop" or "length"
    cancelled: int = 0  # requests dropped because their client went away
    failed: int = 0  # requests that failed inside the model


class Scheduler:
    def __init__(
        self, model, decode: Callable[[list[int], bool], str], max_batch: int, max_queue: int,
        step_fn: DecodeStep | None = None,
    ):
        self.model = model
        self.decode = decode  # (ids, skip_special_tokens) -> text: the processor's decode
        self.step_fn = step_fn  # the model's compiled decode step, if the AudioChat holds one
        self.max_batch = max_batch
        self.stats = SchedulerStats()
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._running = 0
        self._active: set[Job] = set()  # jobs taken from the queue and not yet finished (scheduler thread only)
        self._beat = time.monotonic()  # when the thread last went round its loop (idle too: every _IDLE_WAIT)

    # ---- any thread ------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="auralm-scheduler", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, job: Job, wait: float = 0.0) -> None:
        """Queue a job; raises `QueueFull` when the queue stays full for `wait` seconds (0: at once)."""
        if not self.alive:
            raise RuntimeError("the scheduler is not running")
        try:
            self._queue.put(job, timeout=wait) if wait > 0 else self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull() from None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping.is_set()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def running(self) -> int:
        return self._running

    @property
    def stalled_for(self) -> float:
        """Seconds since the thread last made progress while requests wait or run; 0 when none do (an idle thread
        goes round its loop every _IDLE_WAIT, so only a thread stuck inside the model or its bookkeeping ages)."""
        if not self._active and self._queue.empty():
            return 0.0
        return max(0.0, time.monotonic() - self._beat)

    # ---- the scheduler thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        batch: DecodeBatch | None = None
        while not self._stopping.is_set():
            self._beat = time.monotonic()
            try:
                batch = self._cycle(batch)
            except Exception:
                # Bookkeeping failed outside any one request: fail every request the thread holds (so no client
                # waits forever) and keep serving.
                log.exception("the scheduler failed; failing the %d requests it held", len(self._active))
                self._fail(list(self._active), ServeError(500, "the model failed while answering", "model_error"))
                batch = None
            self._running = len(batch.rows) if batch else 0
        shutdown = ServeError(503, "the server is shutting down", "shutting_down")
        self._fail(list(self._active), shutdown)
        while True:
            try:
                self._queue.get_nowait().fail(shutdown)
            except queue.Empty:
                break
        self._running = 0

    def _cycle(self, batch: DecodeBatch | None) -> DecodeBatch | None:
        """Admit waiting requests, decode one step, hand out the tokens."""
        batch = self._admit(batch)
        self._running = len(batch.rows) if batch else 0
        if batch is None:
            return None
        try:
            batch.step()
        except Exception:
            log.exception("a decode step failed; failing its %d requests", len(batch.rows))
            self._fail([r.tag for r in batch.rows], ServeError(500, "the model failed while answering", "model_error"))
            return None
        self.stats.steps += 1
        self.stats.row_steps += len(batch.rows)
        self.stats.generated_tokens += len(batch.rows)
        self.stats.max_rows = max(self.stats.max_rows, len(batch.rows))
        return self._after_tokens(batch)

    def _admit(self, batch: DecodeBatch | None) -> DecodeBatch | None:
        """Prefill waiting jobs into free slots and merge them into the running batch (blocks briefly when idle)."""
        running = len(batch.rows) if batch else 0
        jobs: list[Job] = []
        while running + len(jobs) < self.max_batch:
            try:
                job = self._queue.get(timeout=_IDLE_WAIT) if running + len(jobs) == 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job.cancelled:
                self.stats.cancelled += 1
                continue
            self._active.add(job)
            jobs.append(job)
        if not jobs:
            return batch
        fresh = self._prefill(jobs)
        if fresh is not None:
            fresh = self._after_tokens(fresh)
        if fresh is not None:
            if batch is not None:
                self.stats.merges += 1
            batch = self._join(batch, fresh)
        return batch

    def _prefill(self, jobs: list[Job]) -> DecodeBatch | None:
        """One prefill for all the jobs; when it fails, each job alone, so only the job at fault fails. Jobs whose
        config searches (beams, CTC joint scores) are decoded whole here, between two steps of the others."""
        for job in jobs:
            job.start(self.decode)
        searching = [j for j in jobs if j.config.searches]
        for job in searching:
            self._search(job)
        jobs = [j for j in jobs if not j.config.searches]
        if not jobs:
            return None
        if len(jobs) > 1:
            try:
                part = DecodeBatch.prefill(
                    self.model, stack_inputs([j.inputs for j in jobs]), [j.config for j in jobs], tags=jobs,
                    step_fn=self.step_fn,
                )
                self.stats.prefills += len(jobs)
                self.stats.batched_prefills += 1
                self.stats.generated_tokens += len(jobs)
                return part
            except Exception:
                log.exception("a batched prefill failed; prefilling its %d requests one by one", len(jobs))
        fresh: DecodeBatch | None = None
        for job in jobs:
            self._beat = time.monotonic()  # each prefill is progress: a slow batch of them is not a stall
            try:
                part = DecodeBatch.prefill(self.model, job.inputs, [job.config], tags=[job], step_fn=self.step_fn)
            except Exception:
                log.exception("prefill failed")
                self._fail_job(job, ServeError(500, "the model failed on this request", "model_error"))
                continue
            self.stats.prefills += 1
            self.stats.generated_tokens += 1
            fresh = self._join(fresh, part)
        return fresh

    def _search(self, job: Job) -> None:
        """Decode one searching job whole (`infer.beam.beam_search`) and hand it its answer."""
        self._beat = time.monotonic()
        try:
            tokens = beam_search(self.model, job.inputs, job.config)
        except Exception:
            log.exception("beam search failed")
            self._fail_job(job, ServeError(500, "the model failed on this request", "model_error"))
            return
        row = Row(job.config, [], tag=job)
        try:
            for token in tokens:
                row.new_tokens.append(token)
                if job.cancelled or job.take(token) or job.cancelled:
                    break
        except Exception:
            log.exception("turning tokens into text failed")
            self._fail_job(job, ServeError(500, "the answer could not be decoded to text", "model_error"))
            return
        self.stats.prefills += 1
        self.stats.generated_tokens += len(row.new_tokens)
        self._retire(job, row)

    def _join(self, batch: DecodeBatch | None, part: DecodeBatch) -> DecodeBatch | None:
        if batch is None:
            return part
        try:
            batch.merge(part)
        except Exception:
            log.exception("merging new requests failed")
            self._fail([r.tag for r in part.rows], ServeError(500, "the model failed on this request", "model_error"))
        return batch

    def _after_tokens(self, batch: DecodeBatch) -> DecodeBatch | None:
        """Hand each row's newest token to its job, then retire finished and cancelled rows."""
        for row in batch.rows:
            job: Job = row.tag
            if row.error is not None:  # this row's logits left nothing to sample: it ends alone
                log.error("request failed in sampling: %s", row.error)
                self._fail_job(job, ServeError(500, "the model failed while answering", "model_error"))
                continue
            try:
                # take() may itself find the client gone (its event loop closed), hence the second check.
                if job.cancelled or job.take(row.new_tokens[-1]) or job.cancelled:
                    row.finished = True
            except Exception:
                log.exception("turning tokens into text failed")
                self._fail_job(job, ServeError(500, "the answer could not be decoded to text", "model_error"))
                row.finished = True
        for row in batch.drop_finished():
            if not row.tag.failed:
                self._retire(row.tag, row)
        if not batch.rows:
            return None
        try:
            if batch.compact(MIN_COMPACT):
                self.stats.compactions += 1
        except Exception:  # an optimisation only: the batch is still whole when it fails
            log.exception("compacting the cache failed")
        return batch

    def _retire(self, job: Job, row: Row) -> None:
        """A job whose row has ended: counted, and sent its finish unless its client went away."""
        self._active.discard(job)
        if job.cancelled:
            self.stats.cancelled += 1
        else:
            self.stats.completed += 1
            job.finish(row)

    def _fail(self, jobs: list[Job], error: ServeError) -> None:
        for job in jobs:
            self._fail_job(job, error)

    def _fail_job(self, job: Job, error: ServeError) -> None:
        self._active.discard(job)
        self.stats.failed += 1
        job.fail(error)
