"""The numbers the rate gate runs on, each with the reason for it (see the package for the policy)."""

# Margin for how unevenly requests reach the server's books after they leave: a request counted just one
# window after another must not get there first (0.3-1.5 ms p1-p99 to a server on the same machine, with rare
# stalls of 20-80 ms). Every window of a long job pays it once, so it starts at twice that p99 (at 5 ms,
# scenario 1 of the benchmark took 30 ms longer, for no fewer 429s there or in the library's test). A 429 at
# the plain pace means the server counted an earlier request later than we did, by about its Retry-After (up
# to WIDEN: a longer one speaks of other traffic, not of lateness): the margin widens by that, or doubles if
# that is more (a busy machine or network delivers less evenly).
GUARD_S = 0.003
WIDEN = 0.02
MAX_GUARD_S = 0.25
# Every QUIET admissions without a 429 halve what one added, and below where it started take NARROW_S off the
# margin, down to MIN_GUARD_S: a job on a quiet machine pays 2 ms from its 50th request on. Such a 429 is
# mostly one stall, not a busier machine: kept wide for 200 admissions (25 one-second windows of scenario 1),
# the margin made those runs take 39.72-39.87 s (39.67-39.71 s without one); narrowing back after 50, they
# took 39.70-39.71 s, and scenario 5 drew no more 429s (6 a run).
# A second such 429 within SLOW_QUIET admissions of the last speaks of a busier machine: from then on the
# margin narrows every SLOW_QUIET (narrowing every 50 regardless, a full run's scenario 1 drew 5 429s).
QUIET, SLOW_QUIET, NARROW_S, MIN_GUARD_S = 50, 200, 0.001, 0.002
# A request counts from when its headers start going out (the HTTP client's trace: after any wait for a
# connection, the TCP and TLS handshakes), and reaches a server on the same machine 0.3-1.7 ms later (p1-p99,
# 3 ms at most), on a connection just opened as on any other (0.3-0.6 ms for the first second's requests).
# Let go at its moment, a request is on the wire 1-2.5 ms later (the event loop's wake-up, the SDK building it,
# a connection from the pool), and every window of a long job would pay that. So a request is let go sooner
# by the LEAD_QUANTILE of how long the last LEADS took (at most MAX_LEAD_S), and counts from when it is sent.
LEADS, LEAD_QUANTILE, MAX_LEAD_S = 64, 0.25, 0.02
# A request goes the moment it fits, so a small one may take room a larger one is waiting for; one that has
# waited this many window lengths books the earliest moment it fits instead, and the others keep clear of it.
PATIENCE = 2.0
# Of the requests waiting at once, those whose tokens fill the token window's room best go first (requests of
# 164-464 tokens in a 2,500-token second: whoever fits first leaves about 4 % of it empty). The room is the one
# the window will have this much later, as last second's bookings leave it one by one: filling only the room of
# the moment left a scrap that stood empty for most of a second (still 2.5 % of scenario 1's time). The others
# leave the room to the chosen for this long, while they come round one by one, spaced as below.
PLAN_S = 0.1
# Two requests never leave closer together than this (or a quarter of the even spacing, if less): the server
# takes a burst in one by one, so the last of a long burst reaches its books later than we counted it. Where
# requests take more of the requests limit than of the tokens one, a second's worth is many: 3 ms drew 8-9 429s
# in scenario 5's bursts of 20 (5 ms: 3). Where they take more of the tokens limit, a second holds fewer (8 in
# scenario 1) and 3 ms spaces them enough: at 5 ms a burst with one more request than the last second's
# pushed the second's last request later, every time (scenario 1: 39.77-39.82 s, against 39.71-39.78 s).
GAP_S, TOKEN_GAP_S = 0.005, 0.003
# After a 429 without a Retry-After, everyone waits this long.
DEFAULT_COOLDOWN_S = 1.0
MAX_COOLDOWN_S = 60.0
# Learning the limits: requests allowed in flight before an answer says them, and how often to look again.
PROBE = 4
POLL_S = 0.05
# Until a request beyond the plain share has been answered without a 429, such a request goes alone: nothing
# else leaves while it is out (for at most this long, or three round trips), so a server that counts over
# short windows answers one 429 for it, not one for every request sent before that answer came back.
TRIAL_WAIT_S = 2.0
# The pace: raised every RAISE_EVERY seconds (or 1.5 round trips, if longer: the answers to the last raise
# come back before the next) while over HIGH of the budget is left, by RAISE at first and by STEP more each
# time up to MAX_RAISE (a cautious probe, then faster); lowered by LOWER under LOW; never above MAX_BOOST
# one-second shares in a second.
RAISE, STEP, MAX_RAISE, RAISE_EVERY = 1.2, 0.1, 1.5, 0.2
HIGH, LOW, LOWER, MAX_BOOST = 0.5, 0.25, 0.5, 60.0
RECENT_S = 10.0  # the span over which the current pace and what limits it are reported
