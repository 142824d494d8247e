"""Continuous batching on one local model: many requests decode together, each streaming its own tokens.

One thread owns the model. Each turn of its loop it

1. drops requests whose caller went away (a closed stream, a disconnected HTTP client) or that finished,
2. prefills the requests that arrived since the last turn (within a prompt-token budget) and merges their
   key/value caches into the running batch, and
3. runs one decode step for every running request, handing each its next token.

A request that joins or leaves changes nothing for the others: every row keeps its own positions, attention
mask and sampling state (its own seeded ``torch.Generator``), so greedy output is the same alone or in a
batch. The batch's key/value cache is a transformers ``DynamicCache`` whose rows are left-padded to a common
length; leaving rows are cut out and the padding every remaining row shares is trimmed away.

Tokens go to each request's ``sink`` (called on this thread; the async side hands them to its event loop).
Structured output plugs in as a per-row ``constraint`` (see :mod:`.constraints`) that masks the logits.
Importing this module is cheap: torch is imported when the loop starts.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .scoring import forward_arguments

__all__ = ["Scheduler", "Sequence", "SchedulerStats"]

log = logging.getLogger("aigc.local")
_ids = itertools.count(1)


@dataclass(eq=False)
class Sequence:
    """One request in the loop. ``sink(token_id)`` gets each new token; ``sink(None)`` once when it ends
    (``finish`` then says why: "stop", "length", "cancelled" or "error" with ``error`` set)."""

    prompt: list[int]
    max_new: int
    sink: Callable[[int | None], None]
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    end_ids: frozenset[int] = frozenset()
    constraint: Any = None  # .mask(vocab) -> bool tensor | None; .advance(token) -> bool (False: done)
    id: int = field(default_factory=lambda: next(_ids))
    generated: int = 0
    finish: str | None = None
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _generator: Any = field(default=None, repr=False)

    def cancel(self) -> None:
        """Stop generating for this request (safe from any thread; the loop notices within a step)."""
        self._stop.set()

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()


@dataclass
class SchedulerStats:
    """Counters for metrics and tests."""

    waiting: int = 0
    running: int = 0
    steps: int = 0
    tokens: int = 0
    prefilled: int = 0
    cancelled: int = 0
    batch_sizes: Counter = field(default_factory=Counter)  # decode steps by number of rows


class Scheduler:
    """The decode loop over one loaded model (``model``, ``device``, ``pad_id``).

    ``max_batch`` rows decode together; ``prefill_tokens`` caps the prompt tokens prefilled per turn (at least
    one request is always admitted), so arrivals never stall running streams for long.
    """

    def __init__(self, model: Any, *, device: str, pad_id: int, max_batch: int = 32,
                 prefill_tokens: int = 4096) -> None:
        self.model = model
        self.device = device
        self.pad_id = pad_id
        self.max_batch = max(1, max_batch)
        self.prefill_tokens = max(1, prefill_tokens)
        self.stats = SchedulerStats()
        self._cv = threading.Condition()
        self._pending: deque[Sequence] = deque()
        self._closed = False
        self._thread: threading.Thread | None = None
        # The running batch: rows, their real lengths, the next input token of each, and the cache.
        self._rows: list[Sequence] = []
        self._lengths: list[int] = []
        self._next: list[int] = []
        self._cache: Any = None
        self._cache_kw, keep = forward_arguments(model)
        self._keep = {keep: 1} if keep else {}

    # -- the caller's side --------------------------------------------------------------------------------

    def submit(self, seq: Sequence) -> Sequence:
        with self._cv:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            self._pending.append(seq)
            self.stats.waiting = len(self._pending)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="aigc-scheduler", daemon=True)
                self._thread.start()
            self._cv.notify()
        return seq

    def close(self, timeout: float = 30.0) -> None:
        """Cancel everything and stop the loop."""
        with self._cv:
            self._closed = True
            for seq in self._pending:
                seq.cancel()
            for seq in self._rows:
                seq.cancel()
            self._cv.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the loop -----------------------------------------------------------------------------------------

    def _loop(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self._cv:
                    while not self._pending and not self._rows and not self._closed:
                        self._cv.wait()
                    if self._closed and not self._rows:
                        for seq in self._pending:
                            self._end(seq, "cancelled")
                        self._pending.clear()
                        return
                    arrivals = self._admit()
                try:
                    self._drop_finished()
                    if arrivals:
                        self._prefill(arrivals)
                        self._drop_finished()
                    if self._rows:
                        self._decode()
                except Exception as e:  # the model failed: fail its requests, keep serving others later
                    log.exception("the decode loop failed")
                    for seq in [*self._rows, *arrivals]:
                        if seq.finish is None:
                            seq.error = e
                            self._end(seq, "error")
                    self._reset()

    def _admit(self) -> list[Sequence]:
        """Pending requests that join this turn (called under the lock); cancelled ones leave the queue."""
        if any(seq.cancelled for seq in self._pending):
            for seq in [s for s in self._pending if s.cancelled]:
                self._end(seq, "cancelled")
            self._pending = deque(s for s in self._pending if not s.cancelled)
        room, budget, out = self.max_batch - len(self._rows), self.prefill_tokens, []
        while self._pending and room > 0:
            seq = self._pending[0]
            if out and len(seq.prompt) > budget:
                break
            out.append(self._pending.popleft())
            budget -= len(seq.prompt)
            room -= 1
        self.stats.waiting = len(self._pending)
        return out

    def _end(self, seq: Sequence, why: str) -> None:
        if seq.finish is not None:
            return
        seq.finish = why
        if why == "cancelled":
            self.stats.cancelled += 1
        try:
            seq.sink(None)
        except Exception:  # a sink must not break the loop
            log.exception("a token sink failed")

    def _emit(self, seq: Sequence, token: int) -> None:
        """Hand ``token`` to its request and decide whether the request goes on."""
        seq.generated += 1
        self.stats.tokens += 1
        try:
            seq.sink(token)
        except Exception:
            log.exception("a token sink failed")
            seq.cancel()
        if seq.constraint is not None and not seq.constraint.advance(token) or token in seq.end_ids:
            self._end(seq, "stop")
        elif seq.generated >= seq.max_new:
            self._end(seq, "length")

    def _drop_finished(self) -> None:
        keep = []
        for i, seq in enumerate(self._rows):
            if seq.cancelled and seq.finish is None:
                self._end(seq, "cancelled")
            if seq.finish is None:
                keep.append(i)
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._reset()
            return
        import torch

        index = torch.tensor(keep, device=self.device)
        self._rows = [self._rows[i] for i in keep]
        self._lengths = [self._lengths[i] for i in keep]
        self._next = [self._next[i] for i in keep]
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
        self._trim()
        self.stats.running = len(self._rows)

    def _trim(self) -> None:
        """Cut the left padding that every row has."""
        width = self._cache.layers[0].keys.shape[-2]
        extra = width - max(self._lengths)
        if extra > 0:
            for layer in self._cache.layers:
                layer.keys = layer.keys[..., extra:, :]
                layer.values = layer.values[..., extra:, :]

    def _reset(self) -> None:
        self._rows, self._lengths, self._next, self._cache = [], [], [], None
        self.stats.running = 0

    def _forward(self, ids: list[list[int]], mask: list[list[int]], positions: list[list[int]], cache: Any):
        import torch

        out = self.model(
            input_ids=torch.tensor(ids, device=self.device),
            attention_mask=torch.tensor(mask, device=self.device),
            position_ids=torch.tensor(positions, device=self.device),
            use_cache=True, **self._keep, **{self._cache_kw: cache},
        )
        return out.logits[:, -1, :].float()

    def _prefill(self, arrivals: list[Sequence]) -> None:
        from transformers import DynamicCache

        width = max(len(s.prompt) for s in arrivals)
        ids = [[self.pad_id] * (width - len(s.prompt)) + s.prompt for s in arrivals]
        mask = [[0] * (width - len(s.prompt)) + [1] * len(s.prompt) for s in arrivals]
        positions = [[0] * (width - len(s.prompt)) + list(range(len(s.prompt))) for s in arrivals]
        cache = DynamicCache(config=self.model.config)
        logits = self._forward(ids, mask, positions, cache)
        if not all(type(layer).__name__ == "DynamicLayer" for layer in cache.layers):
            raise RuntimeError("continuous batching supports full-attention models only (no sliding windows)")
        self.stats.prefilled += len(arrivals)
        for seq in arrivals:
            self._seed(seq)
        tokens = self._pick(arrivals, logits)
        self._merge(arrivals, [len(s.prompt) for s in arrivals], tokens, cache)
        for seq, token in zip(arrivals, tokens, strict=True):
            self._emit(seq, token)

    def _merge(self, rows: list[Sequence], lengths: list[int], tokens: list[int], cache: Any) -> None:
        import torch

        if self._cache is None:
            self._rows, self._lengths, self._next, self._cache = list(rows), list(lengths), list(tokens), cache
        else:
            old, new = self._cache.layers[0].keys.shape[-2], cache.layers[0].keys.shape[-2]
            width = max(old, new)
            for mine, theirs in zip(self._cache.layers, cache.layers, strict=True):
                for name in ("keys", "values"):
                    a, b = getattr(mine, name), getattr(theirs, name)
                    a = _pad_left(torch, a, width - old)
                    b = _pad_left(torch, b, width - new)
                    setattr(mine, name, torch.cat([a, b], dim=0))
            self._rows += rows
            self._lengths += lengths
            self._next += tokens
        self.stats.running = len(self._rows)

    def _decode(self) -> None:
        width = self._cache.layers[0].keys.shape[-2]
        mask = [[0] * (width - n) + [1] * (n + 1) for n in self._lengths]
        logits = self._forward([[t] for t in self._next], mask, [[n] for n in self._lengths], self._cache)
        self._lengths = [n + 1 for n in self._lengths]
        tokens = self._pick(self._rows, logits)
        self._next = tokens
        self.stats.steps += 1
        self.stats.batch_sizes[len(self._rows)] += 1
        for seq, token in zip(self._rows, tokens, strict=True):
            if seq.finish is None:
                self._emit(seq, token)

    # -- choosing tokens ----------------------------------------------------------------------------------

    def _seed(self, seq: Sequence) -> None:
        if seq.temperature:
            import torch

            generator = torch.Generator(device=self.device)
            if seq.seed is not None:
                generator.manual_seed(seq.seed)
            else:
                generator.seed()
            seq._generator = generator

    def _pick(self, rows: list[Sequence], logits: Any) -> list[int]:
        """The next token of each row: greedy, or sampled with its own temperature, top-p and generator."""
        import torch

        for i, seq in enumerate(rows):
            if seq.constraint is not None:
                allowed = seq.constraint.mask(logits.shape[-1])
                if allowed is not None:
                    logits[i].masked_fill_(~allowed.to(logits.device), float("-inf"))
        greedy = logits.argmax(dim=-1).tolist()
        out = []
        for i, seq in enumerate(rows):
            if not seq.temperature:
                out.append(int(greedy[i]))
                continue
            probs = torch.softmax(logits[i] / seq.temperature, dim=-1)
            if seq.top_p is not None and seq.top_p < 1.0:
                ordered, index = torch.sort(probs, descending=True)
                keep = torch.cumsum(ordered, dim=-1) - ordered < seq.top_p
                probs = torch.zeros_like(probs).scatter(0, index[keep], ordered[keep])
            out.append(int(torch.multinomial(probs, 1, generator=seq._generator).item()))
        return out


def _pad_left(torch: Any, tensor: Any, n: int) -> Any:
    if n <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[-2] = n
    return torch.cat([tensor.new_zeros(shape), tensor], dim=-2)
