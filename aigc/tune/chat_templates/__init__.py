"""Training versions of chat templates: the same text, with ``{% generation %}`` around what the model learns.

transformers marks the assistant tokens of an example (``return_assistant_tokens_mask``) only when the chat
template wraps them in ``{% generation %}...{% endgeneration %}``. Most templates, SmolLM2's among them, have
no such markers, so aigc ships a training twin for each one it knows, keyed by the SHA-256 of the original
template; a test renders both on many conversations and requires identical text. A model whose template has
its own markers uses it as it is; for any other, pass a template of your own (``--chat-template FILE``).
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path

from ...errors import ConfigError

__all__ = ["training_template", "has_generation_markers", "KNOWN"]

# SHA-256 of a model's own chat template -> the shipped training twin (a file beside this module).
KNOWN = {
    # SmolLM2-135M/360M/1.7B-Instruct
    "872be49dbb638044ad01b60388f48d469ff2980e5f0dccdc22ec907db54d0788": "smollm2.jinja",
}
_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


def has_generation_markers(template: str) -> bool:
    return bool(_MARKER.search(template))


def _shipped(name: str) -> str:
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    return text[:-1] if text.endswith("\n") else text  # the file's last newline is not part of the template


def training_template(original: str | None, *, model: str, override: str | Path | None = None) -> str:
    """The template to render training examples with (the original, its shipped twin, or ``override``)."""
    if override is not None:
        path = Path(override)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read the chat template {path}: {e.strerror}") from None
        if not has_generation_markers(text):
            raise ConfigError(f"the chat template {path} has no {{% generation %}} markers around the "
                              "assistant's text; add them so only the replies are learned")
        return text
    if not original:
        raise ConfigError(f"{model} has no chat template; pass one with {{% generation %}} markers "
                          "(--chat-template FILE)")
    if has_generation_markers(original):
        return original
    name = KNOWN.get(hashlib.sha256(original.encode("utf-8")).hexdigest())
    if name is None:
        raise ConfigError(f"the chat template of {model} has no {{% generation %}} markers and aigc ships no "
                          "training version of it; copy it, wrap each assistant reply and its end token in "
                          "{% generation %}...{% endgeneration %}, and pass it with --chat-template FILE")
    return _shipped(name)
