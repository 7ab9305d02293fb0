"""Answer validators for escalation: an answer that fails one goes one rung up the ladder.

A validator is any callable ``validator(text) -> ValidationResult | bool | (bool, message)``;
:func:`check_answer` runs a list of them. Built in: :class:`JsonValid`, :class:`JsonSchemaValid`
(the jsonschema package) and :class:`NoRefusal` (refusals and "I'm not sure").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


def key_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


@dataclass(frozen=True)
class ValidationResult:
    ok: bool
    message: str = ""


def _strip_fence(text: str) -> str:
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else ""
        t = t.rsplit("```", 1)[0]
    return t


class JsonValid:
    """The answer must parse as JSON (a surrounding ```json fence is allowed)."""

    def __call__(self, text: str) -> ValidationResult:
        try:
            json.loads(_strip_fence(text))
        except ValueError as e:
            return ValidationResult(False, f"not valid JSON: {e}")
        return ValidationResult(True)


class JsonSchemaValid:
    """The answer must be JSON valid under ``schema`` (checked with the jsonschema package)."""

    def __init__(self, schema: Mapping):
        import jsonschema

        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        self._validator = cls(schema)

    def __call__(self, text: str) -> ValidationResult:
        import jsonschema

        try:
            obj = json.loads(_strip_fence(text))
        except ValueError as e:
            return ValidationResult(False, f"not valid JSON: {e}")
        err = jsonschema.exceptions.best_match(self._validator.iter_errors(obj))
        if err is not None:
            return ValidationResult(False, f"JSON Schema: {key_path(err.absolute_path)}: "
                                           f"{err.message}")
        return ValidationResult(True)


REFUSAL_PATTERNS = (r"\bI(?:'m| am) not (?:sure|certain|able)\b", r"\bI (?:can(?:not|'t)|won't)"
                    r" (?:help|assist|answer|do that)", r"\bI(?:'m| am) (?:unable|sorry)\b",
                    r"\bI don't know\b", r"\bas an AI\b")


class NoRefusal:
    """The answer must not be empty or a refusal / "I'm not sure" (regexes, case-insensitive)."""

    def __init__(self, patterns: Sequence[str] = REFUSAL_PATTERNS):
        self._rx = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)

    def __call__(self, text: str) -> ValidationResult:
        if not text.strip():
            return ValidationResult(False, "empty answer")
        m = self._rx.search(text)
        return ValidationResult(False, f"refusal: {m.group(0)!r}") if m else ValidationResult(True)


def check_answer(validators: Sequence[Callable], text: str) -> ValidationResult:
    """Run validators in order; the first failure wins. A callable may return a bool, a
    (bool, message) pair or a ValidationResult; one that raises counts as a failure."""
    for v in validators:
        name = getattr(v, "__name__", type(v).__name__)
        try:
            r = v(text)
        except Exception as e:
            return ValidationResult(False, f"{name} raised {type(e).__name__}: {e}")
        if isinstance(r, tuple):
            r = ValidationResult(bool(r[0]), str(r[1]))
        elif not isinstance(r, ValidationResult):
            r = ValidationResult(bool(r), "" if r else f"{name} rejected the answer")
        if not r.ok:
            return r
    return ValidationResult(True)
