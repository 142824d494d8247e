"""Which of the requests waiting at a rate gate go first: those whose tokens fill the token window's room best
(see the package: the books)."""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence

from .policy import PLAN_S
from .windows import Limit

__all__ = ["Waiting", "fill"]


class Waiting:
    """The requests waiting at one gate (ticket: tokens, oldest first), and those chosen to fill the token
    window's room when it last grew, which the others leave it to for PLAN_S. Used under the gate's lock."""

    def __init__(self) -> None:
        self.tickets = itertools.count()
        self._tokens: dict[int, int] = {}
        self._plan: set[int] = set()
        self._planned = float("-inf")

    def wait(self, ticket: int, tokens: int) -> None:
        self._tokens[ticket] = tokens

    def leave(self, ticket: int) -> None:
        self._tokens.pop(ticket, None)
        self._plan.discard(ticket)

    def turn(self, now: float, ticket: int, limits: dict[str, Limit]) -> float:
        """``now`` if ``ticket``, which fits now, may go; else the moment the token room next grows, because
        other waiting requests fill better the room that opens within PLAN_S. (The gate asks only while its pace
        is one share a second, where the room grows only as bookings leave the window.)"""
        limit = limits.get("tokens")
        if limit is None or len(self._tokens) < 2:
            return now
        room = limit.share.room(now)
        if sum(self._tokens.values()) <= room:  # all of them fit: nothing to choose (request-bound runs)
            return now
        if now - self._planned < PLAN_S:
            if ticket in self._plan:
                return now
            chosen = sum(self._tokens[t] for t in self._plan)
            if self._tokens[ticket] <= room - chosen:  # room to spare beyond the chosen
                return now
        # the room once the bookings due to leave within PLAN_S have left: filled whole, it leaves no scrap to
        # stand empty until the next second's bookings leave; the chosen go as the room opens for each
        later = now + PLAN_S
        opening = max(room, limit.share.room(later))
        ready = [(t, n) for t, n in self._tokens.items() if n <= opening]
        requests = limits.get("requests")
        if sum(n for _, n in ready) <= room or requests is not None and len(ready) > requests.share.room(later):
            return now  # all of them fit, or the requests limit binds: whoever comes first goes first
        self._plan, self._planned = set(fill(ready, opening)), now
        if ticket in self._plan or not self._plan:
            return now
        return max(limit.share.grows(now), now + 0.001)


def fill(waiting: Sequence[tuple[Hashable, int]], room: float) -> list[Hashable]:
    """The keys of the requests, of ``(key, tokens)`` oldest first, whose tokens add up to the most that
    ``room`` holds; among equal fills, the one that leaves the newest waiting. Exact (a subset sum over the
    room's tokens as bits of one integer), and cheap for the dozens that wait at once."""
    limit = int(room)
    mask = (1 << (limit + 1)) - 1
    reach = [1]  # reach[k]: the sums the first k requests can make, bit s for sum s
    for _, tokens in waiting:
        reach.append((reach[-1] | (reach[-1] << tokens)) & mask if tokens > 0 else reach[-1])
    total = reach[-1].bit_length() - 1
    chosen = []
    for k in range(len(waiting), 0, -1):  # from the newest back: leave it out wherever the older ones make do
        key, tokens = waiting[k - 1]
        if not reach[k - 1] >> total & 1:
            chosen.append(key)
            total -= tokens
    return chosen[::-1]
