"""Groups of markdown blocks for translation: each at most ``chunk_tokens``, code kept apart."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InputError
from .markdown import Block
from .packing import _Packer, _Sizer, _sizer

__all__ = ["group_blocks"]


def group_blocks(blocks: Sequence[Block], chunk_tokens: int, counter: Any) -> list[list[Block]]:
    """Consecutive blocks packed into groups to translate together, in order.

    A group holds either translatable blocks (with the blank lines between them), at most ``chunk_tokens``
    tokens once its leading and trailing whitespace is set aside, or only blocks that are never translated.
    A translatable block over the limit is cut with the same boundaries as :func:`split` into pieces of the
    same kind, each in its own group; joining every group's blocks gives the text back unchanged.
    """
    if chunk_tokens < 1:
        raise InputError(f"chunk_tokens must be at least 1, not {chunk_tokens}")
    sizer = _sizer(counter, None)

    def size(group: list[Block]) -> int:
        return sizer.count("".join(b.text for b in group).strip())

    groups: list[list[Block]] = []
    current: list[Block] = []
    mode: bool | None = None  # None while the group holds only blank lines
    estimate = 0  # the group's blocks counted one by one, newlines included: rarely below the joined count

    def flush() -> None:
        nonlocal current, mode, estimate
        if current and mode and size(current) > chunk_tokens:
            groups.extend(_regroup(current, chunk_tokens, size))
        elif current:
            groups.append(current)
        current, mode, estimate = [], None, 0

    for block in blocks:
        if block.kind == "blank":
            current.append(block)
            estimate += sizer.count(block.text)
            continue
        if mode is not None and mode != block.translatable:
            flush()
        if not block.translatable:
            mode = False
            current.append(block)
            continue
        tokens = sizer.count(block.text)
        if tokens > chunk_tokens and sizer.count(block.text.strip()) > chunk_tokens:
            flush()
            groups.extend([piece] for piece in _pieces(block, chunk_tokens, sizer))
            continue
        if mode and estimate + tokens > chunk_tokens:
            flush()
        mode = True
        current.append(block)
        estimate += tokens
    flush()
    return groups


def _regroup(group: list[Block], chunk_tokens: int, size: Callable[[list[Block]], int]) -> list[list[Block]]:
    """Re-pack a group whose joined text came out over the limit, checking each addition exactly."""
    out: list[list[Block]] = []
    current: list[Block] = []
    for block in group:
        if block.kind != "blank" and any(b.kind != "blank" for b in current) and size([*current, block]) > chunk_tokens:
            out.append(current)
            current = []
        current.append(block)
    out.append(current)
    return out


def _pieces(block: Block, chunk_tokens: int, sizer: _Sizer) -> list[Block]:
    spans = _Packer(block.text, chunk_tokens, sizer, markdown=False).spans()
    cuts = [0] + [start for start, _ in spans[1:]] + [len(block.text)]
    return [Block(block.kind, block.text[a:b]) for a, b in zip(cuts, cuts[1:], strict=False) if a < b]

