"""Client keys of ``router-ml serve --keys FILE``: who may call the endpoint, and their limits.

A client sends ``Authorization: Bearer <secret>``. The keys file never holds a secret: each
entry stores the hex sha256 of it. A secret is ``rk-`` and 43 URL-safe characters (32 random
bytes from :mod:`secrets`), so its sha256 cannot be searched back (the way API gateways store
tokens; a slow password hash is for low-entropy passwords). ``router-ml keys new NAME`` prints
a fresh secret once and the entry to paste into the file:

.. code-block:: toml

    [[keys]]
    name = "alice"                # goes into the decision log's client column
    sha256 = "9f86d0...0f00a08"   # 64 hex digits: sha256 of the secret
    usd_per_day = 5.0             # optional budgets (UTC day, UTC month)
    usd_per_month = 100.0
    requests_per_minute = 60      # optional
    max_concurrent = 8            # optional (default 8) requests in flight at once

The same list under ``keys`` in JSON (``{"keys": [{...}]}``) or YAML.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
from dataclasses import dataclass

from router_ml.errors import KeysFileError
from router_ml.loop._config_file import read_config

SECRET_PREFIX = "rk-"
DEFAULT_MAX_CONCURRENT = 8
_HEX = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
LIMITS = ("usd_per_day", "usd_per_month", "requests_per_minute", "max_concurrent")
_FIELDS = ("name", "sha256", *LIMITS)


@dataclass(frozen=True)
class ClientKey:
    """One client: its ``name`` (logged), the hex ``sha256`` of its secret, budgets in USD per
    UTC day and month (None: none), requests per minute (None: no limit) and requests in
    flight at once."""

    name: str
    sha256: str
    usd_per_day: float | None = None
    usd_per_month: float | None = None
    requests_per_minute: int | None = None
    max_concurrent: int = DEFAULT_MAX_CONCURRENT


def hash_secret(secret: str) -> str:
    """The hex sha256 of a secret, as the keys file stores it."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def new_secret() -> str:
    """A fresh secret: ``rk-`` and 32 random bytes, URL-safe base64 (256 bits)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class KeyRing:
    """The keys of one file; :meth:`authenticate` finds the key of a presented secret."""

    def __init__(self, keys, source: str = "keys"):
        self.keys, self.source = tuple(keys), source
        self._by_name = {k.name: k for k in self.keys}

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, name: str) -> ClientKey:
        return self._by_name[name]

    def authenticate(self, secret: str | None) -> ClientKey | None:
        """The key whose stored hash is the secret's sha256, or None. Every stored hash is
        compared with :func:`hmac.compare_digest`, so the time taken does not depend on which
        key (if any) matches or on how much of a hash does."""
        if not secret:
            return None
        digest = hash_secret(secret).encode()
        found = None
        for k in self.keys:
            if hmac.compare_digest(k.sha256.encode(), digest):
                found = k
        return found


def parse_keys(data, source: str = "keys") -> KeyRing:
    """Validate a parsed keys file (``{"keys": [{...}, ...]}``); errors name ``source`` and
    the entry."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeysFileError(f"{source}: expected a list of keys under 'keys' ([[keys]] in TOML, "
                            '{"keys": [...]} in JSON, keys: in YAML)')
    extra = set(data) - {"keys"}
    if extra:
        raise KeysFileError(f"{source}: unknown top-level fields {', '.join(sorted(extra))}; "
                            "only 'keys' is read")
    out, names, hashes = [], set(), set()
    for i, e in enumerate(data["keys"]):
        where = f"{source}: keys[{i}]"
        if not isinstance(e, dict):
            raise KeysFileError(f"{where}: each key is a table/object with name and sha256")
        if isinstance(e.get("name"), str):
            where += f" ({e['name']!r})"
        if "secret" in e or "key" in e:
            raise KeysFileError(f"{where}: a keys file holds no secrets, only their sha256; "
                                "make an entry with `router-ml keys new NAME` and give the "
                                "secret to the client")
        unknown = set(e) - set(_FIELDS)
        if unknown:
            raise KeysFileError(f"{where}: unknown fields {', '.join(sorted(unknown))}; known: "
                                f"{', '.join(_FIELDS)}")
        name, digest = e.get("name"), e.get("sha256")
        if not isinstance(name, str) or not _NAME.match(name):
            raise KeysFileError(f"{where}: name must be 1-64 letters, digits or _.@- "
                                f"(starting with a letter or digit), got {name!r}")
        if not isinstance(digest, str) or not _HEX.match(digest.lower()):
            raise KeysFileError(f"{where}: sha256 must be the 64 hex digits of the secret's "
                                "sha256 (router-ml keys new prints it)")
        digest = digest.lower()
        if name in names:
            raise KeysFileError(f"{where}: the name {name!r} is used twice")
        if digest in hashes:
            raise KeysFileError(f"{where}: the same sha256 (the same secret) is listed twice")
        names.add(name)
        hashes.add(digest)
        limits = {f: _limit(e[f], f, where) for f in LIMITS if e.get(f) is not None}
        out.append(ClientKey(name, digest, **limits))
    if not out:
        raise KeysFileError(f"{source}: the file lists no keys; add one with "
                            "`router-ml keys new NAME`")
    return KeyRing(out, source)


def _limit(v, field: str, where: str):
    integral = field in ("requests_per_minute", "max_concurrent")
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    if ok and integral and v != int(v):
        ok = False
    if not ok:
        kind = "a whole number" if integral else "a number of USD"
        raise KeysFileError(f"{where}: {field} must be {kind} > 0, got {v!r}")
    return int(v) if integral else float(v)


def load_keys(path) -> KeyRing:
    """Read and validate a keys file (.toml, .json, .yaml/.yml); see the module docstring."""
    data = read_config(path, "keys file", KeysFileError,
                       "make an entry with `router-ml keys new NAME`")
    return parse_keys(data, str(path))


def entry_text(key: ClientKey, fmt: str = "toml") -> str:
    """The keys file entry of ``key`` in ``fmt`` (toml, json or yaml)."""
    fields = {f: getattr(key, f) for f in _FIELDS
              if getattr(key, f) is not None
              and not (f == "max_concurrent" and key.max_concurrent == DEFAULT_MAX_CONCURRENT)}
    if fmt == "toml":
        return "[[keys]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items())
    if fmt == "json":
        return json.dumps(fields) + "\n"
    if fmt == "yaml":
        return "".join(("- " if i == 0 else "  ") + f"{k}: {json.dumps(v)}\n"
                       for i, (k, v) in enumerate(fields.items()))
    raise ValueError(f"fmt must be toml, json or yaml, got {fmt!r}")






__all__ = ["ClientKey", "DEFAULT_MAX_CONCURRENT", "KeyRing", "SECRET_PREFIX", "entry_text",
           "hash_secret", "load_keys", "new_secret", "parse_keys"]
