"""Prompts as the router takes them: a list of str, one str, or chat messages (scored on their
user turns, newest first: :func:`prompt_text`); and the fingerprint that records what a router
was trained or calibrated on.
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


# Earlier user turns add at most this many characters to the scored text: a long conversation
# is neither read in full on every request nor scored by the sum of its turns' lengths.
CONTEXT_CHARS = 2000
# between the turns of the scored text
TURN_SEPARATOR = "\n\n"


def user_turns(messages, name: str = "prompt") -> list[str]:
    """The text of each ``user`` message of OpenAI-style chat messages (a list of ``{"role",
    "content"}`` dicts), oldest first; content given as a list of parts contributes its
    ``text`` parts, joined by newlines. TypeError naming the message's position for a
    malformed message, ValueError when no message has role ``user``."""
    if not isinstance(messages, (list, tuple)):
        raise TypeError(f"{name} must be str or a list of chat messages "
                        f"({{'role': ..., 'content': ...}}), got {type(messages).__name__}")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise TypeError(f"{name}[{i}] must be a chat message ({{'role': ..., 'content': "
                            f"...}}), got {type(m).__name__}")
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            turns.append(content)
        elif isinstance(content, list):
            turns.append("\n".join(p.get("text", "") for p in content
                                   if isinstance(p, Mapping) and p.get("type") == "text"))
        else:
            raise TypeError(f"{name}[{i}]: a user message's content must be str or a list "
                            f"of parts, got {type(content).__name__}")
    if not turns:
        raise ValueError(f"{name}: no message with role 'user' among {len(messages)} messages")
    return turns


def prompt_text(prompt, name: str = "prompt") -> str:
    """The text a router scores: a str as it is; for OpenAI-style chat messages the
    conversation's user turns, newest first: the last ``user`` message whole, then the earlier
    ones, most recent first, joined by a blank line, the earlier turns cut to
    :data:`CONTEXT_CHARS` characters. A single user turn is scored alone, exactly as a str.
    A short follow-up ("Translate it.") thus inherits the difficulty of what it follows, and
    a new question still leads the text (the encoders read its start first). System and
    assistant messages are not read (see :func:`user_turns` for the content's forms)."""
    if isinstance(prompt, str):
        return prompt
    if not isinstance(prompt, (list, tuple)) or not all(isinstance(m, Mapping) for m in prompt):
        raise TypeError(f"{name} must be str or a list of chat messages "
                        f"({{'role': ..., 'content': ...}}), got {type(prompt).__name__}")
    *earlier, last = user_turns(prompt, name)
    if not earlier:
        return last
    context = TURN_SEPARATOR.join(reversed(earlier))[:CONTEXT_CHARS]
    return last + TURN_SEPARATOR + context if context else last


def chat_texts(values, name: str = "messages") -> list[str]:
    """:func:`prompt_text` of each chat of a table's column: values holds, per row, the JSON
    text of a list of ``{"role", "content"}`` messages or such a list. ValueError or
    TypeError naming the row (``name`` row i) that is not a chat."""
    import json

    out = []
    for i, v in enumerate(values):
        where = f"{name} row {i}"
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except ValueError as e:
                raise ValueError(f"{where} is not JSON ({e}); give a JSON list of "
                                 '{"role", "content"} messages') from None
        out.append(prompt_text(v, where))
    return out


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
