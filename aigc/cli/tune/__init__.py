"""``aigc tune validate|data-from|local|openai|status|list|cancel|alias``: fine-tuning from the command line.

Exit codes: 0 done; 1 the training or the hosted job failed (or was cancelled); 2 bad data, options or
configuration (every problem in the data is listed with its line), or access refused (403); 3 the estimated
cost is over the budget (nothing was uploaded); 130 interrupted (run the same command again to continue).
"""

from __future__ import annotations

# isort: off
from . import train, data, jobs  # noqa: F401  (each registers its commands; local training first)
# isort: on
