"""One rate gate per client (and per batch run): requests and tokens per minute, learned from the server,
paced, and a common cooldown after a 429.

**The books.** OpenAI states limits per minute but enforces them over short windows: 1,200 requests per minute
means at most 20 in any one second, and a token limit counts each request's prompt tokens plus its maximum
output tokens when it is admitted. The gate keeps the same books as the server — a sliding one-second share
of each limit (one request per ``60/rpm`` seconds for limits under 60 a minute), and the whole minute — so a
request is only sent when the server will accept it. A request is counted when it leaves, and leaves as soon
as it fits; waiting, it holds nothing, so a smaller one that fits the room left goes first, and of several
waiting, those whose tokens best fill the room that opens over the next moment go first (:mod:`.packing`).
One that has waited two window lengths (or is larger than a whole share) books the earliest moment it fits
instead, and the others keep clear of it. Two never leave within 5 ms of each other (3 ms where they take more
of the token limit than of the requests one: fewer go a second): the server takes a burst in one by one, so the
last of a long burst would reach its books later than we counted it. A request counts from when its headers go
out (:func:`leaving`, a request hook that adds an httpx trace: after any wait for a connection and its
handshakes). A request is let go as much sooner than its moment as the last ones took to reach the wire (a
quarter of them).

**The limits.** Configured ``rpm``/``tpm`` are a ceiling; the server's ``x-ratelimit-limit-*`` headers are the
truth when lower. With none configured, the limits are learned from the first answers: until then only a
handful of requests go out (a server that sends no such headers is not limited after that handful).

**The pace** (additive/multiplicative, like TCP's congestion window). A second may take ``boost`` one-second
shares, starting at 1: servers that count over whole minutes let a small job go much faster. While the
headers show more than half of the minute's budget left and no 429 has come back, the boost grows every fifth
of a second (or every 1.5 round trips, if longer, so the answers to one raise come back before the next): by
a fifth at first, then by 10 points more each time up to a half. Until the server has let two requests
beyond the plain share in (one that reached it late can let one in), such a request goes alone: nothing
else leaves before its answer, so a server that counts short windows costs one 429. A 429 drops the boost
to 1 at once and keeps it there (the server counts over short windows), and a budget running low shrinks it
again. The minute window keeps the whole run under the limit.

+------------------------------+-----------------------------------------------+
| the server says              | the gate does                                 |
+==============================+===============================================+
| ``x-ratelimit-limit-*``      | takes the lower of it and the configured limit |
| > 50 % remaining, no 429     | raises the pace 20 %, 30 % … 50 % per 0.2 s+   |
| < 25 % remaining             | halves the pace (not below one share)          |
| 429 (+ Retry-After)          | pace back to one share for good; everyone      |
|                              | waits out the Retry-After; at one share, the   |
|                              | margin doubles (or widens by the Retry-After)  |
| 50 requests without a 429    | margin halves back to where it started; from   |
|                              | there, 1 ms less (down to 2 ms); every 200     |
|                              | once two such 429s came within 200 requests    |
| 5xx / dropped connection     | nothing: the attempt keeps its place (counted) |
+------------------------------+-----------------------------------------------+

The gate needs no thread of its own: under a plain lock, :meth:`RateGate.reserve` counts the request if it
fits now, or says how long until it would (booking that moment only for a request that has waited long).
The caller sleeps that long — ``time.sleep`` in threads, ``asyncio.sleep`` in tasks — and asks again, so
one gate serves sync code, async code and threads alike.
"""

from __future__ import annotations

from .gate import PROBE, RateGate, Slot
from .hooks import aleaving, leaving
from .windows import Window, share

__all__ = ["RateGate", "Window", "Slot", "PROBE", "aleaving", "leaving", "share"]
