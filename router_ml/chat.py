"""The text a router scores from an OpenAI-style chat: ``[{"role": ..., "content": ...}]``.

The router's own ``router_ml.router.prompt_text`` is used when the installed router has one;
otherwise the prompt is the last user turn (content given as a string, or as a list of
``{"type": "text", "text": ...}`` parts, whose texts are joined with new lines).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def _content_text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) or hasattr(content, "tolist"):
        parts = content.tolist() if hasattr(content, "tolist") else content
        return "\n".join(str(p.get("text", "")) for p in parts
                         if isinstance(p, Mapping) and p.get("type", "text") == "text")
    raise TypeError(f"message content must be a string or a list of parts, got "
                    f"{type(content).__name__}")


def last_user_text(messages) -> str:
    """The content of the last ``user`` message; TypeError if ``messages`` is not a list of
    ``{"role", "content"}`` mappings, ValueError if none has the role ``user``."""
    if hasattr(messages, "tolist"):  # a numpy array from a DataFrame cell
        messages = messages.tolist()
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of {{'role', 'content'}} mappings, got "
                        f"{type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m:
            raise TypeError(f"messages[{i}] must be a mapping with 'role' and 'content', got "
                            f"{type(m).__name__}")
    for m in reversed(messages):
        if m["role"] == "user":
            return _content_text(m.get("content"))
    raise ValueError("messages hold no 'user' turn; nothing to route on")


def prompt_text(messages) -> str:
    """The text to score for a chat (see the module docstring)."""
    try:
        from router_ml.router import prompt_text as own
    except ImportError:
        own = None
    if own is not None:
        return own(messages)
    return last_user_text(messages)
