"""Prompts as the router takes them: a list of str, one str, or chat messages (scored on the
last user turn); and the fingerprint that records what a router was trained or calibrated on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def check_prompts(prompts, name: str = "prompts") -> list[str]:
    """A list of str, or TypeError naming the argument and the offending item."""
    if isinstance(prompts, (str, bytes)):
        raise TypeError(f"{name} must be a list of str, got a single {type(prompts).__name__}; "
                        "use route(prompt) for one prompt or wrap it in a list")
    if not isinstance(prompts, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a list of str, got {type(prompts).__name__}")
    out = list(prompts)
    for i, p in enumerate(out):
        if not isinstance(p, str):
            raise TypeError(f"{name}[{i}] must be str, got {type(p).__name__}")
    return out


def check_prompt(prompt, name: str = "prompt") -> str:
    if not isinstance(prompt, str):
        raise TypeError(f"{name} must be str, got {type(prompt).__name__}")
    return prompt


def prompt_text(prompt, name: str = "prompt") -> str:
    """The text a router scores: a str as it is, or for OpenAI-style chat messages (a list of
    ``{"role", "content"}`` dicts) the content of the last ``user`` message. The latest turn
    is what the chosen model must answer; earlier turns and system prompts are not read.
    Content given as a list of parts contributes its ``text`` parts."""
    if isinstance(prompt, str):
        return prompt
    if not isinstance(prompt, (list, tuple)) or not all(isinstance(m, Mapping) for m in prompt):
        raise TypeError(f"{name} must be str or a list of chat messages "
                        f"({{'role': ..., 'content': ...}}), got {type(prompt).__name__}")
    for m in reversed(prompt):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(p.get("text", "") for p in content
                                 if isinstance(p, Mapping) and p.get("type") == "text")
            raise TypeError(f"{name}: the last user message's content must be str or a list "
                            f"of parts, got {type(content).__name__}")
    raise ValueError(f"{name}: no message with role 'user' among {len(prompt)} messages")


def fingerprint(prompts: Sequence[str], *arrays: np.ndarray) -> str:
    """A short sha256 of prompts and label arrays, to record what a router was trained on."""
    import hashlib

    h = hashlib.sha256()
    for p in prompts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]
