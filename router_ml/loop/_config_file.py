"""Reading a configuration file (the rules file, the keys file) in TOML, JSON or YAML, with an
error that names the file, whatever its format or fault."""

from __future__ import annotations

import json
from pathlib import Path

SUFFIXES = (".toml", ".json", ".yaml", ".yml")


def read_config(path, what: str, error: type[Exception], missing_hint: str = ""):
    """The parsed content of ``path`` (.toml, .json, .yaml or .yml). ``error`` (a class taking
    one message) is raised for a missing file (with ``missing_hint``), another suffix, or
    content that does not parse (a YAML tag ``safe_load`` will not construct included);
    ``what`` names the file in the message, e.g. ``"rules file"``."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist" + (f"; {missing_hint}" if missing_hint else ""))
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise error(f"{path}: use a .toml, .json, .yaml or .yml {what}")
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text)
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(str(e).replace("\n", " ")) from None
    except (ValueError, ImportError) as e:  # decode errors (and UnicodeDecodeError) are ValueErrors
        raise error(f"{path}: cannot parse ({type(e).__name__}: {e})") from None


__all__ = ["SUFFIXES", "read_config"]
