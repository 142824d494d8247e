"""One rate gate per client (and per batch run): requests and tokens per minute, learned from the server,
paced, and a common cooldown after a 429.

**The books.** OpenAI states limits per minute but enforces them over short windows: 1,200 requests per minute
means at most 20 in any one second, and a token limit counts each request's prompt tokens plus its maximum
output tokens when it is admitted. The gate keeps the same books as the server — a sliding one-second share
of each limit (one request per ``60/rpm`` seconds for limits under 60 a minute), and the whole minute — so a
request is only sent when the server will accept it. Within those windows requests are paced, one every
``window / n`` seconds, so they leave one by one rather than in bursts, and take their turn in order.

**The limits.** Configured ``rpm``/``tpm`` are a ceiling; the server's ``x-ratelimit-limit-*`` headers are the
truth when lower. With none configured, the limits are learned from the first answers: until then only a
handful of requests go out (a server that sends no such headers is not limited after that handful).

**The pace** (additive/multiplicative, like TCP's congestion window). A second may take ``boost`` one-second
shares, starting at 1: servers that count over whole minutes let a small job go much faster. While the
headers show more than half of the minute's budget left and no 429 has come back, the boost grows by a fifth
every fifth of a second (or every 1.5 round trips, if longer, so the answers to one raise come back before
the next); a 429 drops it to 1 at once and keeps it there (the server counts over short windows), and a
budget running low shrinks it again. The minute window keeps the whole run under the limit.

+------------------------------+-----------------------------------------------+
| the server says              | the gate does                                 |
+==============================+===============================================+
| ``x-ratelimit-limit-*``      | takes the lower of it and the configured limit |
| > 50 % remaining, no 429     | raises the pace by 20 % every 0.2 s+ (≤ 60×)   |
| < 25 % remaining             | halves the pace (not below one share)          |
| 429 (+ Retry-After)          | pace back to one share for good; everyone      |
|                              | waits out the Retry-After, then goes paced     |
| 5xx / dropped connection     | nothing: the attempt keeps its place (counted) |
+------------------------------+-----------------------------------------------+

The gate schedules rather than polls: under a plain lock, :meth:`RateGate.reserve` finds the earliest moment
the request fits, books it there, and returns how long to wait. The caller then sleeps — ``time.sleep`` in
threads, ``asyncio.sleep`` in tasks — so one gate serves sync code, async code and threads alike.
"""

from __future__ import annotations

from .gate import PROBE, RateGate, Slot
from .windows import Window, share

__all__ = ["RateGate", "Window", "Slot", "PROBE", "share"]
