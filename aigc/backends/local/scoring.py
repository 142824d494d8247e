"""Scoring replies without generating them: the log-probability a local model gives each of some
continuations of one prompt, in one forward pass over all of them (for classification's confidences), and
the log-probability of each token of a reply already generated (the ``logprobs`` a request may ask for).

A continuation is scored as the whole reply, end-of-turn marker included, as the model's chat template would
write it: "positive" is then not also counted as the start of "positively".
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from ...errors import ContextLengthExceeded
from ...types import TokenLogprob

__all__ = ["reply_ids", "score_replies", "token_logprobs"]


def reply_ids(lm: Any, messages: list[dict[str, str]], prompt: list[int], reply: str,
              encode: Any) -> list[int]:
    """The token ids that follow ``prompt`` when the model's reply is ``reply``: rendered by its chat template
    (so the end-of-turn marker is the template's own), cut after the first end token."""
    tok = lm.tokenizer
    ids: list[int] | None = None
    if getattr(tok, "chat_template", None):
        full = encode(tok.apply_chat_template([*messages, {"role": "assistant", "content": reply}],
                                              tokenize=False))
        if full[:len(prompt)] == prompt and len(full) > len(prompt):
            ids = full[len(prompt):]
    if ids is None:  # a template that does not extend its prompt: the reply's own tokens and an end token
        ids = [*encode(reply), lm.end_ids[0]]
    ends = [i for i, t in enumerate(ids) if t in lm.end_ids]
    return ids[: ends[0] + 1] if ends else ids


def score_replies(lm: Any, prompt: list[int], replies: list[list[int]]) -> list[float]:
    """The summed log-probability of each reply's tokens after ``prompt``. The prompt is read once; the
    replies then run together (right-padded) on copies of its cache."""
    import torch

    longest = max(len(r) for r in replies)
    if len(prompt) + longest > lm.context_window:
        raise ContextLengthExceeded(f"the prompt and its longest reply take {len(prompt) + longest} tokens, but "
                                    f"{lm.name} holds {lm.context_window}; shorten the text",
                                    code="context_length_exceeded")
    n, device = len(replies), lm.device
    name, keep_name = forward_arguments(lm.model)
    keep = {keep_name: 1} if keep_name else {}
    with torch.inference_mode():
        first = lm.model(input_ids=torch.tensor([prompt], device=device), use_cache=True, **keep)
        cache = getattr(first, name)
        cache.batch_repeat_interleave(n)
        rows = torch.tensor([r + [lm.pad_id] * (longest - len(r)) for r in replies], device=device)
        mask = torch.tensor([[1] * len(prompt) + [1] * len(r) + [0] * (longest - len(r)) for r in replies],
                            device=device)
        rest = lm.model(input_ids=rows, attention_mask=mask, use_cache=False, **{name: cache})
    # The prediction of a reply's first token is the prompt's last position; the others follow it.
    logp = torch.cat([first.logits[:, -1:, :].float().expand(n, 1, -1), rest.logits[:, :-1, :].float()], dim=1)
    logp = torch.log_softmax(logp, dim=-1)
    totals = []
    for row, reply in enumerate(replies):
        picked = logp[row, torch.arange(len(reply), device=device), torch.tensor(reply, device=device)]
        totals.append(float(picked.sum()))
    return totals


def token_logprobs(lm: Any, prompt: list[int], reply: list[int], top: int) -> list[TokenLogprob]:
    """Each token of ``reply`` (generated after ``prompt``) with its log-probability and the ``top`` likeliest
    tokens at its place, read in one forward pass. The figures are the model's own distribution, before any
    temperature or top_p (as vLLM reports them by default); end tokens are left out, as OpenAI does."""
    import torch

    if not reply:
        return []
    _, name = forward_arguments(lm.model)
    keep = {name: len(reply) + 1} if name else {}
    with torch.inference_mode():
        out = lm.model(input_ids=torch.tensor([prompt + reply], device=lm.device), use_cache=False, **keep)
    logits = out.logits[0, -(len(reply) + 1):-1, :].float()  # position i predicts reply[i]
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp[torch.arange(len(reply), device=logp.device), torch.tensor(reply, device=logp.device)].tolist()
    if top:
        values, ids = logp.topk(top, dim=-1)
        values, ids = values.tolist(), ids.tolist()
    decode, ends = lm.tokenizer.decode, set(lm.end_ids)
    tokens = []
    for i, token in enumerate(reply):
        if token in ends:
            continue
        alternatives = [(decode([t]), v) for t, v in zip(ids[i], values[i], strict=True)] if top else []
        tokens.append(TokenLogprob(token=decode([token]), logprob=picked[i], top=alternatives))
    return tokens


def forward_arguments(model: Any) -> tuple[str, str | None]:
    """What this transformers version calls the key/value cache in a forward call (``cache`` in 5.x, else
    ``past_key_values``), and how it asks for the last positions' logits only (None: it cannot); read once
    per model class."""
    return _forward_arguments(type(model))


@functools.cache
def _forward_arguments(cls: type) -> tuple[str, str | None]:
    params = inspect.signature(cls.forward).parameters
    keep = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)
    return ("cache" if "cache" in params else "past_key_values"), keep

