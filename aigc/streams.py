"""Text as it arrives: what ``stream=True`` returns (sync and async twins with the same members)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from .types import Result

__all__ = ["TextStream", "AsyncTextStream"]


class _StreamBase:
    _result: Result | None = None

    @property
    def done(self) -> bool:
        """True once the stream has ended and :attr:`result` is there."""
        return self._result is not None


class TextStream(_StreamBase):
    """Iterate it for the pieces of text; ``.result`` holds the full :class:`Result` afterwards (reading it
    before the end consumes the rest)."""

    def __init__(self, pieces: Iterator[str | Result]) -> None:
        self._pieces = pieces
        self._result = None

    def __iter__(self) -> Iterator[str]:
        for piece in self._pieces:
            if isinstance(piece, Result):
                self._result = piece
            else:
                yield piece

    @property
    def result(self) -> Result:
        if self._result is None:
            for _ in self:
                pass
        assert self._result is not None
        return self._result

    def get_result(self) -> Result:
        """The same as :attr:`result` (the async twin's spelling)."""
        return self.result

    @property
    def text(self) -> str:
        return self.result.text


class AsyncTextStream(_StreamBase):
    """``async for piece in stream``; then ``stream.result`` (or ``await stream.get_result()``, which also
    consumes what is left)."""

    def __init__(self, pieces: AsyncIterator[str | Result]) -> None:
        self._pieces = pieces
        self._result = None

    async def __aiter__(self) -> AsyncIterator[str]:
        async for piece in self._pieces:
            if isinstance(piece, Result):
                self._result = piece
            else:
                yield piece

    @property
    def result(self) -> Result:
        if self._result is None:
            raise RuntimeError("the stream has not ended yet: iterate it, or `await stream.get_result()`")
        return self._result

    async def get_result(self) -> Result:
        if self._result is None:
            async for _ in self:
                pass
        assert self._result is not None
        return self._result

    @property
    def text(self) -> str:
        return self.result.text
