"""The local backend: a Hugging Face transformers model on this machine (CPU, CUDA or MPS).

Importing this module is cheap: torch and transformers are imported, and the model loaded, on first use.
One model is resident at a time; one generation runs at a time (a lock around the model), so the thread-based
async defaults of :class:`BaseBackend` are safe to use concurrently.

Token accounting uses the model's own tokenizer: ``prompt_tokens`` is the length of the chat-templated prompt,
and ``completion_tokens`` counts every token the model generated, including the end-of-turn token when it
emitted one (it was computed like any other) and the token that completed a ``stop`` string.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import BackendError, ContextLengthExceeded
from ...types import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    ChatRequest,
    Completion,
    Message,
    Scores,
    StreamDelta,
    TokenLogprob,
    Usage,
)
from ..base import BaseBackend
from . import models as local_models
from .batcher import MicroBatcher
from .models import DEFAULT_MODEL, LoadedModel

if TYPE_CHECKING:
    from ...config import Settings
    from ...models import ModelInfo

__all__ = ["LocalBackend", "DEFAULT_MODEL"]

log = logging.getLogger("aigc.local")

request_ids = itertools.count(1)
_JSON_INSTRUCTION = (
    "\n\nReply with JSON only: one JSON value that matches this JSON Schema, "
    "with no other text and no code fences.\nJSON Schema:\n{schema}"
)


@dataclass
class _Job:
    """One request, tokenized and checked against the context window."""

    request: ChatRequest
    ids: list[int]
    max_new: int
    temperature: float | None

    @property
    def sample(self) -> bool:
        return bool(self.temperature)

    def key(self) -> tuple:
        """Requests with equal keys can share a batch."""
        r = self.request
        if self.sample and r.seed is not None:  # a seeded sample is reproducible only when it runs alone
            return ("seeded", id(self))
        sampling = (self.temperature, r.top_p) if self.sample else None
        return (self.max_new, sampling, tuple(r.stop or ()))


class LocalBackend(BaseBackend):
    """Chat completions from a local transformers model (default: SmolLM2-135M-Instruct)."""

    name = "local"
    default_model = DEFAULT_MODEL
    prefers_batches = True  # many prompts go through generate_batch together (Client.map, batch jobs)
    can_score = True  # score(): the likelihood of given replies, without generating
    free = True  # no per-token price: the compute is yours

    def __init__(self, settings: Settings, *, batch_size: int | None = None) -> None:
        self.settings = settings
        self.batch_size = batch_size
        self._loaded: LoadedModel | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()  # one generation at a time on the model
        self._tok_lock = threading.Lock()
        # Concurrent async callers (batch jobs, gather) are generated together in batches.
        self.batcher = MicroBatcher(self.generate_batch, self.generate)

    # --- loading ---------------------------------------------------------------------------------------------

    def _model_name(self, model: str | None) -> str:
        return model or self.settings.model or DEFAULT_MODEL

    def _get(self, model: str | None) -> LoadedModel:
        name = self._model_name(model)
        with self._load_lock:
            if self._loaded is not None and self._loaded.name == name:
                return self._loaded
            spec = local_models.resolve_model(name)
            local_models.check_installed(spec, self.settings.cache_dir)
            device = local_models.choose_device(self.settings.device)
            dtype = local_models.choose_dtype(device, self.settings.dtype)
            self._loaded = None  # one resident model: let the previous one go before loading the next
            self._loaded = local_models.load(spec, self.settings.cache_dir, device, dtype)
            log.debug("loaded %s on %s (%s)", name, device, dtype)
            return self._loaded

    async def agenerate(self, request: ChatRequest) -> Completion:
        return await self.batcher.submit(request)

    def close(self) -> None:
        self.batcher.close()
        with self._load_lock, self._run_lock:
            on_cuda = self._loaded is not None and self._loaded.device.startswith("cuda")
            self._loaded = None
        if on_cuda:
            import torch

            torch.cuda.empty_cache()

    # --- counting --------------------------------------------------------------------------------------------

    def _encode(self, lm: LoadedModel, text: str) -> list[int]:
        with self._tok_lock:
            return list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prompt_ids(
        self, lm: LoadedModel, messages: list[Message], json_schema: dict | None = None
    ) -> list[int]:
        chat = [{"role": m.role, "content": m.content} for m in messages]
        if json_schema is not None:
            schema = json_schema.get("schema", json_schema)
            note = _JSON_INSTRUCTION.format(schema=json.dumps(schema, ensure_ascii=False))
            users = [i for i, m in enumerate(chat) if m["role"] == "user"]
            if users:
                chat[users[-1]] = {"role": "user", "content": chat[users[-1]]["content"] + note}
            else:
                chat.append({"role": "user", "content": note.lstrip()})
        tok = lm.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        else:  # a base model without a chat template: plain transcript
            text = "".join(f"{m['role']}: {m['content']}\n" for m in chat) + "assistant:"
        # The template already holds any special tokens (e.g. BOS) the model expects.
        return self._encode(lm, text)

    def count_tokens(self, messages: list[Message], model: str) -> int:
        """Prompt tokens for ``messages``: equal to the ``prompt_tokens`` generate reports for them."""
        lm = self._get(model)
        return len(self._prompt_ids(lm, messages))

    def count_text(self, text: str, model: str) -> int:
        return len(self._encode(self._get(model), text))

    def model_info(self, model: str) -> ModelInfo:
        """The loaded model's window (its output may fill it); no price: the compute is yours."""
        from ...models import ModelInfo

        lm = self._get(model)
        return ModelInfo(name=lm.name, context_window=lm.context_window, max_output_tokens=lm.context_window,
                         encoding=None, tokenizer=lm.name, input_price=0.0, output_price=0.0,
                         batch_input_price=0.0, batch_output_price=0.0, backend="local")

    def score(self, request: ChatRequest, continuations: list[str]) -> Scores:
        """The log-probability of each continuation as the model's whole reply to ``request``."""
        from .scoring import reply_ids, score_replies

        lm = self._get(request.model)
        chat = [{"role": m.role, "content": m.content} for m in request.messages]
        prompt = self._prompt_ids(lm, request.messages)
        replies = [reply_ids(lm, chat, prompt, c, lambda text: self._encode(lm, text)) for c in continuations]
        with self._run_lock:
            totals = score_replies(lm, prompt, replies)
        return Scores(logprobs=totals, tokens=[len(r) for r in replies], prompt_tokens=len(prompt), model=lm.name)

    # --- generating ------------------------------------------------------------------------------------------

    def _plan(self, lm: LoadedModel, request: ChatRequest) -> _Job:
        ids = self._prompt_ids(lm, request.messages, request.json_schema)
        ctx, n = lm.context_window, len(ids)
        if request.max_output_tokens is not None:
            if n + request.max_output_tokens > ctx:
                raise ContextLengthExceeded(
                    f"the prompt is {n} tokens and max_output_tokens is {request.max_output_tokens}, but "
                    f"{lm.name} holds {ctx} tokens; shorten the input or lower max_output_tokens",
                    code="context_length_exceeded",
                )
            max_new = request.max_output_tokens
        else:
            if n >= ctx:
                raise ContextLengthExceeded(
                    f"the prompt is {n} tokens but {lm.name} holds {ctx}; shorten the input",
                    code="context_length_exceeded",
                )
            max_new = min(self.settings.max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS, ctx - n)
        temperature = request.temperature if request.temperature is not None else self.settings.temperature
        return _Job(request, ids, max_new, temperature)

    def _run(
        self,
        lm: LoadedModel,
        jobs: list[_Job],
        *,
        streamer: Any = None,
        cancel: threading.Event | None = None,
    ):
        """Generate for jobs that share a key; returns each row's new token ids (padding included)."""
        import torch

        first = jobs[0]
        width = max(len(j.ids) for j in jobs)
        # Left padding: every row's prompt ends where generation starts. Position ids come from the mask.
        rows = [[lm.pad_id] * (width - len(j.ids)) + j.ids for j in jobs]
        mask = [[0] * (width - len(j.ids)) + [1] * len(j.ids) for j in jobs]
        kwargs: dict[str, Any] = {
            "max_new_tokens": first.max_new,
            "eos_token_id": lm.end_ids,
            "pad_token_id": lm.pad_id,
        }
        if first.sample:
            kwargs.update(do_sample=True, temperature=first.temperature)
            if first.request.top_p is not None:
                kwargs["top_p"] = first.request.top_p
        else:
            kwargs["do_sample"] = False
        if first.request.stop:
            kwargs.update(stop_strings=list(first.request.stop), tokenizer=lm.tokenizer)
        if streamer is not None:
            kwargs["streamer"] = streamer
        if cancel is not None:
            kwargs["stopping_criteria"] = _cancel_criteria(cancel)
        with self._run_lock:
            if cancel is not None and cancel.is_set():
                return [[] for _ in jobs]
            if first.sample and first.request.seed is not None:
                torch.manual_seed(first.request.seed)
            try:
                with torch.inference_mode():
                    out = lm.model.generate(
                        input_ids=torch.tensor(rows, device=lm.device),
                        attention_mask=torch.tensor(mask, device=lm.device),
                        **kwargs,
                    )
            except (RuntimeError, ValueError) as e:
                raise BackendError(f"the local model {lm.name} failed: {e}") from e
        return [row[width:].tolist() for row in out.cpu()]

    def _finish(self, lm: LoadedModel, job: _Job, new_ids: list[int]) -> Completion:
        tok, stops = lm.tokenizer, job.request.stop or []
        generated, ended = list(new_ids), False
        for i, t in enumerate(generated):  # rows of a batch are padded after their end token
            if t in lm.end_ids:
                generated, ended = generated[: i + 1], True
                break
        text = tok.decode(generated, skip_special_tokens=True)
        cut = first_stop(text, stops)
        if cut is not None:
            # Count tokens up to the one that completed the stop string, as generation itself stopped there.
            lo, hi = 1, len(generated)
            while lo < hi:
                mid = (lo + hi) // 2
                if first_stop(tok.decode(generated[:mid], skip_special_tokens=True), stops) is None:
                    lo = mid + 1
                else:
                    hi = mid
            generated, text, ended = generated[:lo], text[:cut], True
        return Completion(
            text=text,
            finish_reason="stop" if ended or len(generated) < job.max_new else "length",
            usage=Usage(prompt_tokens=len(job.ids), completion_tokens=len(generated)),
            model=lm.name,
            request_id=f"local-{next(request_ids)}",
            response_format="prompt" if job.request.json_schema is not None else None,
            logprobs=self._logprobs(lm, job, generated),
        )

    def _logprobs(self, lm: LoadedModel, job: _Job, generated: list[int]) -> list[TokenLogprob] | None:
        """The reply's token log-probabilities when its request asked for them (one more forward pass)."""
        if job.request.logprobs is None:
            return None
        from .scoring import token_logprobs

        with self._run_lock:
            return token_logprobs(lm, job.ids, generated, job.request.logprobs)

    def generate(self, request: ChatRequest) -> Completion:
        lm = self._get(request.model)
        job = self._plan(lm, request)
        return self._finish(lm, job, self._run(lm, [job])[0])

    def generate_batch(self, requests: list[ChatRequest]) -> list[Completion]:
        """Generate many requests, batching those that share a model and generation settings.

        Within a group, prompts keep the caller's order: a batch runs until its longest reply ends, so
        grouping by prompt length (less padding) measured slower than it saved. Greedy results equal
        one-by-one results; a sampled request with a seed runs alone so its seed keeps meaning the same thing.
        """
        results: list[Completion | None] = [None] * len(requests)
        by_model: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_model.setdefault(self._model_name(r.model), []).append(i)
        for indices in by_model.values():
            lm = self._get(requests[indices[0]].model)
            jobs = {i: self._plan(lm, requests[i]) for i in indices}  # raises before any work is done
            cap = self.batch_size or (8 if lm.device == "cpu" else 32)
            groups: dict[tuple, list[int]] = {}
            for i in indices:
                groups.setdefault(jobs[i].key(), []).append(i)
            for members in groups.values():
                for start in range(0, len(members), cap):
                    chunk = members[start : start + cap]
                    outputs = self._run(lm, [jobs[i] for i in chunk])
                    for i, new_ids in zip(chunk, outputs, strict=True):
                        results[i] = self._finish(lm, jobs[i], new_ids)
        return results  # type: ignore[return-value]

    def stream(self, request: ChatRequest) -> Iterator[StreamDelta]:
        """Text as it is generated (word by word); the last delta carries the Completion."""
        from transformers import TextIteratorStreamer

        lm = self._get(request.model)
        job = self._plan(lm, request)
        streamer = TextIteratorStreamer(lm.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = threading.Event()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["ids"] = self._run(lm, [job], streamer=streamer, cancel=cancel)[0]
            except BaseException as e:  # re-raised in the consumer's thread below
                outcome["error"] = e
                streamer.end()

        worker = threading.Thread(target=work, name="aigc-local-stream", daemon=True)
        worker.start()
        seen = emitted = ""
        try:
            for piece in streamer:
                seen += piece
                safe = _safe_prefix(seen, request.stop or [])
                if len(safe) > len(emitted):
                    yield StreamDelta(text=safe[len(emitted) :])
                    emitted = safe
        finally:
            cancel.set()  # stops the generation early if the consumer walked away
            worker.join()
        if "error" in outcome:
            raise outcome["error"]
        completion = self._finish(lm, job, outcome["ids"])
        if completion.text.startswith(emitted) and len(completion.text) > len(emitted):
            yield StreamDelta(text=completion.text[len(emitted) :])
        yield StreamDelta(completion=completion)


def first_stop(text: str, stops: list[str]) -> int | None:
    """Where the first of the stop strings begins in ``text``, or None."""
    found = [i for s in stops if s and (i := text.find(s)) >= 0]
    return min(found) if found else None


def held_back(text: str, stops: list[str]) -> int:
    """Characters at the end of ``text`` that could be the start of a stop string (kept back for now)."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return hold


def _safe_prefix(text: str, stops: list[str]) -> str:
    """The part of streamed ``text`` that can be shown: before any stop string, and never a stop's beginning."""
    cut = first_stop(text, stops)
    if cut is not None:
        return text[:cut]
    return text[: len(text) - held_back(text, stops)]


def _cancel_criteria(event: threading.Event):
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full(
                (input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device
            )

    return StoppingCriteriaList([_Cancelled()])
