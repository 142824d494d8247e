"""The local backend: a Hugging Face transformers model on this machine.

- :mod:`.backend` — :class:`LocalBackend` (generation, streaming, batching, counting)
- :mod:`.models` — finding, converting (GGUF → safetensors, once) and loading models
- :mod:`.batcher` — groups concurrent async requests into batches on the model
- :mod:`.hardware` — what this machine can run (torch build, CUDA, memory), for ``aigc doctor``

Importing this package is cheap: torch and transformers are imported when a model is first used.
"""

from __future__ import annotations

from .backend import LocalBackend
from .models import DEFAULT_MODEL

__all__ = ["LocalBackend", "DEFAULT_MODEL"]
