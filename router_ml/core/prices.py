"""Model prices and the cost of a prompt: the built-in price table (router_ml/core/prices.json),
a team's price file over it, and the USD cost of answering each prompt with each model.

Units: prices in USD per million tokens (input and output priced separately); a prompt's cost
in USD. The monthly bill and the budget threshold are in :mod:`router_ml.learn.budget`.

    from router_ml.core.prices import load_prices, prompt_costs
    prices = load_prices()                       # built-in table
    prices = load_prices("my_prices.toml")       # ... overridden / extended from a file
    prompt_costs(["What is 2+2?"], ["gpt-4o", "gpt-4o-mini"], prices)   # (1, 2) USD

A price file (JSON, TOML, or YAML when pyyaml is installed) maps model names to prices,
either at the top level or under a ``models`` key::

    [models."gpt-4o"]          # TOML
    input = 2.50               # USD per million input tokens
    output = 10.00             # USD per million output tokens

Model names are matched without regard to case; a provider's model falls back to its bare
name's list price (``openai/GPT-4o`` finds ``gpt-4o``), never to another provider's entry
(``azure/gpt-4o`` does not find ``openai/gpt-4o``): see :class:`PriceTable`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from router_ml.core.heads import is_number
from router_ml.errors import DataFormatError, DataNotFoundError, UnknownModelError

TOKENS_PER_MILLION = 1_000_000


# Rough rule for English text with OpenAI-style BPE tokenizers; pass a tokenizer for exact counts.
CHARS_PER_TOKEN = 4.0


BUILTIN_SOURCE = "built-in price table"


_METADATA_KEYS = ("unit", "as_of", "note", "source")



def canonical_model(name: str) -> str:
    """The model name without an organisation prefix (text after the last ``/``).

    For the raw names of the shared sources only; a user's model names are kept as written.
    """
    return str(name).strip().rsplit("/", 1)[-1]


def non_negative_price(value, name: str, unit: str) -> float:
    """``value`` as a finite float >= 0, or ValueError naming ``name`` and its unit."""
    if not is_number(value):
        raise ValueError(f"{name} must be a number >= 0 ({unit}), got {type(value).__name__} "
                         f"{value!r}")
    x = float(value)
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"{name} must be a finite number >= 0 ({unit}), got {x}")
    return x


def check_tokens(value, name: str):
    """A token count: a float >= 0 (mean per request) or a read-only (n,) float64 array."""
    if is_number(value):
        return non_negative_price(value, name, "tokens per request")
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a number or a sequence of numbers (tokens per "
                         f"request), got {type(value).__name__}")
    try:
        a = np.array(value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a sequence of numbers (tokens per "
                         f"request), got {type(value).__name__}") from None
    if len(a) == 0:
        raise ValueError(f"{name} holds no token counts; give a mean or one count per prompt")
    bad = np.flatnonzero(~np.isfinite(a) | (a < 0))
    if len(bad):
        raise ValueError(f"{name}[{bad[0]}] must be a finite number >= 0 (tokens), "
                         f"got {a[bad[0]]}")
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class ModelPrice:
    """A model's list price. input, output: USD per million input / output tokens."""

    input: float
    output: float

    def __post_init__(self):
        object.__setattr__(self, "input", non_negative_price(self.input, "input", "USD per million tokens"))
        object.__setattr__(self, "output", non_negative_price(self.output, "output", "USD per million tokens"))

    def request_cost(self, input_tokens, output_tokens):
        """USD for requests of the given token counts (numbers or arrays, broadcast)."""
        return (np.asarray(input_tokens) * self.input + np.asarray(output_tokens) * self.output) \
            / TOKENS_PER_MILLION


def price_entry(model: str, spec, where: str) -> ModelPrice:
    if isinstance(spec, ModelPrice):
        return spec
    if not isinstance(spec, Mapping):
        raise DataFormatError(f"{where}: model {model!r} must map to {{'input': USD per million "
                              f"tokens, 'output': USD per million tokens}}, got "
                              f"{type(spec).__name__}")
    for f in ("input", "output"):
        if f not in spec:
            raise DataFormatError(f"{where}: model {model!r} lacks the field {f!r} "
                                  "(USD per million tokens)")
    try:
        return ModelPrice(spec["input"], spec["output"])
    except ValueError as e:
        raise ValueError(f"{where}: model {model!r}: {e}") from None


class PriceTable(Mapping):
    """Prices by model name: ``table["gpt-4o"]`` is a :class:`ModelPrice` (USD per million
    tokens). Lookup ignores case. A provider's model (``openai/gpt-4o``) takes its own entry,
    else the entry of its bare name (``gpt-4o``, as the built-in table lists list prices);
    a bare name takes the one provider's entry that has it. Another provider's entry is never
    used (``azure/gpt-4o`` does not take ``openai/gpt-4o``'s price). A missing model raises
    :class:`~router_ml.errors.UnknownModelError` naming the model and ``source``.

    prices: {model: ModelPrice or {"input": float, "output": float}}; source: where the prices
    come from (a file path or ``"built-in price table"``), used in error messages.
    """

    def __init__(self, prices: Mapping, source: str = "custom price table"):
        self.source = str(source)
        self._entries: dict[str, tuple[str, ModelPrice]] = {}
        for name, spec in prices.items():
            self._add(name, spec, self.source, override=False, strict=True)

    def _add(self, name, spec, where: str, *, override: bool, strict: bool) -> None:
        if not isinstance(name, str) or not canonical_model(name):
            raise DataFormatError(f"{where}: model names must be non-empty strings, got {name!r}")
        display = name.strip()
        price = price_entry(display, spec, where)
        key = display.casefold()
        if key in self._entries:
            if strict:
                raise DataFormatError(f"{where}: model {display!r} is listed twice (names that "
                                      "differ only in case are the same)")
            if not override:
                return
        self._entries[key] = (display, price)

    def _key(self, model: str) -> str | None:
        key = model.strip().casefold()
        if key in self._entries:
            return key
        bare = canonical_model(key)
        if bare != key:  # a provider's model: the bare name's list price, if listed
            return bare if bare in self._entries else None
        twins = [k for k in self._entries if canonical_model(k) == key]
        return twins[0] if len(twins) == 1 else None

    def __getitem__(self, model: str) -> ModelPrice:
        key = self._key(model) if isinstance(model, str) else None
        if key is None:
            known = ", ".join(sorted(d for d, _ in self._entries.values()))
            bare = canonical_model(model).casefold() if isinstance(model, str) else None
            twins = sorted(d for k, (d, _) in self._entries.items() if canonical_model(k) == bare)
            why = (f" ({', '.join(twins)} {'is' if len(twins) == 1 else 'are'} another "
                   "provider's model: prices are per provider, or give the bare name)"
                   if twins else "")
            raise UnknownModelError(
                f"unknown model {model!r}: it is not in the price table ({self.source}){why}; "
                f"known models: {known or 'none'}. Add it to a price file, e.g. JSON "
                f'{{"{model}": {{"input": <USD per 1M input tokens>, "output": <USD per 1M '
                f'output tokens>}}}}, and load it with router_ml.core.prices.load_prices(path)')
        return self._entries[key][1]

    def __iter__(self):
        return (d for d, _ in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"PriceTable({len(self)} models from {self.source})"

    def merge(self, prices: Mapping, source: str, *, override: bool = True) -> "PriceTable":
        """A new table: this one plus ``prices`` ({model: price}) from ``source``. With
        ``override`` a model present in both takes the new price, else it keeps the old one."""
        out = PriceTable({}, source=f"{source} over {self.source}")
        out._entries = dict(self._entries)
        seen: set[str] = set()
        for name, spec in prices.items():
            key = name.strip().casefold() if isinstance(name, str) else name
            if key in seen:
                raise DataFormatError(f"{source}: model {name!r} is listed twice (names that "
                                      "differ only in case are the same)")
            seen.add(key)
            out._add(name, spec, str(source), override=override, strict=False)
        return out

    def to_dict(self) -> dict[str, dict[str, float]]:
        """{model: {"input": USD/Mtok, "output": USD/Mtok}}, in table order."""
        return {d: {"input": p.input, "output": p.output} for d, p in self._entries.values()}


def _model_map(data, where: str) -> Mapping:
    """The {model: price} part of a parsed price file: its ``models`` key or the top level."""
    if not isinstance(data, Mapping):
        raise DataFormatError(f"{where}: expected a mapping of model names to prices, got "
                              f"{type(data).__name__}")
    if "models" in data:
        models = data["models"]
        if not isinstance(models, Mapping):
            raise DataFormatError(f"{where}: 'models' must map model names to prices")
        return models
    if not data:
        raise DataFormatError(f"{where}: holds no prices")
    return {k: v for k, v in data.items() if not (k in _METADATA_KEYS and not isinstance(v, Mapping))}


def read_price_file(path) -> dict:
    """The {model: {"input", "output"}} mapping of a JSON, TOML or YAML price file (USD per
    million tokens). DataNotFoundError if missing, DataFormatError if unreadable."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"price file {path} does not exist")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    elif suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise DataFormatError(f"{path}: not valid TOML ({e})") from None
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise DataFormatError(f"{path}: reading YAML needs pyyaml (pip install pyyaml); "
                                  "or write the prices as JSON or TOML") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise DataFormatError(f"{path}: not valid YAML ({e})") from None
    else:
        raise DataFormatError(f"{path}: unsupported price file type {suffix!r}; use .json, "
                              ".toml, .yaml or .yml")
    return dict(_model_map(data, str(path)))


def builtin_price_table() -> PriceTable:
    text = resources.files("router_ml.core").joinpath("prices.json").read_text(encoding="utf-8")
    return PriceTable(_model_map(json.loads(text), BUILTIN_SOURCE), source=BUILTIN_SOURCE)


def load_prices(path=None, *, builtin: bool = True) -> PriceTable:
    """The price table (USD per million tokens): the built-in one (router_ml/core/prices.json),
    overridden and extended by the file at ``path`` if given (JSON, TOML or YAML). With
    ``builtin=False`` only the file's prices are used."""
    table = builtin_price_table() if builtin else None
    if path is None:
        if table is None:
            raise ValueError("load_prices(builtin=False) needs a price file path")
        return table
    data = read_price_file(path)
    if table is None:
        return PriceTable(data, source=str(path))
    return table.merge(data, source=str(path), override=True)


def as_price_table(prices) -> PriceTable:
    if prices is None:
        return builtin_price_table()
    if isinstance(prices, PriceTable):
        return prices
    if isinstance(prices, Mapping):
        return PriceTable(prices)
    raise TypeError(f"prices must be a PriceTable or a mapping, got {type(prices).__name__}")


def load_tokenizer(path):
    """A Hugging Face ``tokenizers`` tokenizer from a ``tokenizer.json`` file (or a folder
    holding one), for exact token counts; read from disk only."""
    from tokenizers import Tokenizer

    p = Path(path)
    f = p / "tokenizer.json" if p.is_dir() else p
    if not f.is_file():
        raise FileNotFoundError(f"--tokenizer {path}: no tokenizer.json there")
    try:
        return Tokenizer.from_file(str(f))
    except Exception as e:  # tokenizers raises its own Exception type on a bad file
        raise ValueError(f"--tokenizer {f}: not a Hugging Face tokenizer file ({e})") from None


def count_tokens(text: str, tokenizer, chars_per_token: float) -> float:
    if not isinstance(text, str):
        raise TypeError(f"prompts must be str, got {type(text).__name__}")
    if tokenizer is None:
        return len(text) / chars_per_token
    out = tokenizer.encode(text) if hasattr(tokenizer, "encode") else tokenizer(text)
    if is_number(out):
        return float(out)
    return float(len(getattr(out, "ids", out)))


OUTPUT_TOKENS = 256  # docs/protocols.md: assumed output length where a data set has no token counts


def prompt_costs(prompts: Sequence[str], models: Sequence[str], prices,
                 output_tokens: float = OUTPUT_TOKENS, tokenizer=None) -> np.ndarray:
    """(n, len(models)) USD of answering each prompt with each model.

    cost(m, p) = (input_price_m * tokens(p) + output_price_m * output_tokens) / 1e6, prices
    in USD per million tokens: a :class:`PriceTable` or {model: {"input", "output"}} (an exact
    name first, else matched as :class:`PriceTable` does). tokens(p): the count of an exact
    ``tokenizer`` when given (a callable ``str -> int`` or ``str -> tokens``, or an object
    with ``encode``: tiktoken, Hugging Face ``tokenizers``), else ceil(len(p) / 4). A model
    without a price raises :class:`~router_ml.errors.UnknownModelError` naming it and the table.
    """
    table = prices if isinstance(prices, PriceTable) else None
    rates = []
    for m in models:
        if table is None and isinstance(prices, Mapping) and m in prices:
            p = price_entry(m, prices[m], "the router's price table")
        else:
            if table is None:
                table = PriceTable(prices or {}, source="the router's price table")
            p = table[m]
        rates.append((p.input, p.output))
    r = np.asarray(rates, dtype=np.float64).reshape(len(models), 2)
    tokens = input_tokens(prompts, tokenizer)
    return (tokens[:, None] * r[:, 0] + output_tokens * r[:, 1]) / TOKENS_PER_MILLION


def input_tokens(prompts: Sequence[str], tokenizer=None) -> np.ndarray:
    """(n,) float64 input tokens per prompt, as costs count them: the ``tokenizer``'s count
    when given (see :func:`prompt_costs`), else ceil(characters / 4)."""
    if tokenizer is None:
        return np.ceil(np.fromiter((len(p) for p in prompts), dtype=np.float64,
                                   count=len(prompts)) / 4)
    return np.array([count_tokens(p, tokenizer, 1.0) for p in prompts], dtype=np.float64)


def row_costs(prompts: Sequence[str], models: Sequence[str], observed=None, prices=None,
              tokenizer=None) -> np.ndarray:
    """(n, len(models)) USD per prompt and model: the observed cost where a log has one
    (``<model>|total_cost`` columns; NaN where unknown), else the estimate from ``prices``
    (:func:`prompt_costs`, with ``tokenizer``). Without prices every cell must be observed."""
    if observed is None:
        return prompt_costs(prompts, models, prices, tokenizer=tokenizer)
    observed = np.asarray(observed, dtype=np.float64)
    missing = ~np.isfinite(observed)
    if not missing.any():
        return observed
    if not prices:
        lacking = [m for j, m in enumerate(models) if missing[:, j].any()]
        raise UnknownModelError(f"no observed cost for some prompts of {', '.join(lacking)} and "
                                "no price table to estimate it: pass a price file (--prices)")
    return np.where(missing, prompt_costs(prompts, models, prices, tokenizer=tokenizer), observed)
