"""Money: model prices, traffic, the monthly bill of a routing policy, and a budget threshold.

Units everywhere: prices in USD per million tokens (input and output priced separately),
costs in USD per month, strong-call shares as fractions in [0, 1], savings in USD per month
and in percent (0-100) of the always-strong bill.

    from router_ml.costs import TrafficProfile, load_prices, monthly_cost
    prices = load_prices()                       # built-in table (router_ml/prices.json)
    prices = load_prices("my_prices.toml")       # ... overridden / extended from a file
    traffic = TrafficProfile(requests_per_month=1_000_000, input_tokens=500, output_tokens=200)
    monthly_cost("gpt-4o", traffic, prices)      # 3250.0 USD/month

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

from router_ml.calibration import (
    CalibrationRecord,
    candidate_thresholds,
    check_scores,
    check_threshold,
    is_number,
)
from router_ml.data import STRONG_MODEL, WEAK_MODEL, canonical_model, fingerprint
from router_ml.errors import CalibrationError, DataFormatError, DataNotFoundError, UnknownModelError

TOKENS_PER_MILLION = 1_000_000
# Rough rule for English text with OpenAI-style BPE tokenizers; pass a tokenizer for exact counts.
CHARS_PER_TOKEN = 4.0
BUILTIN_SOURCE = "built-in price table"
_METADATA_KEYS = ("unit", "as_of", "note", "source")


# ---------------------------------------------------------------------------- validation


def _non_negative(value, name: str, unit: str) -> float:
    """``value`` as a finite float >= 0, or ValueError naming ``name`` and its unit."""
    if not is_number(value):
        raise ValueError(f"{name} must be a number >= 0 ({unit}), got {type(value).__name__} "
                         f"{value!r}")
    x = float(value)
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"{name} must be a finite number >= 0 ({unit}), got {x}")
    return x


def _tokens(value, name: str):
    """A token count: a float >= 0 (mean per request) or a read-only (n,) float64 array."""
    if is_number(value):
        return _non_negative(value, name, "tokens per request")
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


def _share(share):
    """A strong-call share (fraction in [0, 1]) as a float or a float64 array."""
    if is_number(share):
        s = float(share)
        if not math.isfinite(s) or not 0.0 <= s <= 1.0:
            raise ValueError(f"share must be a fraction in [0, 1] (strong-model calls / all "
                             f"calls), got {s}")
        return s
    a = np.asarray(share, dtype=np.float64)
    if not (np.isfinite(a).all() and (a >= 0).all() and (a <= 1).all()):
        raise ValueError("share must hold fractions in [0, 1] (strong-model calls / all calls)")
    return a


# ---------------------------------------------------------------------------- prices


@dataclass(frozen=True)
class ModelPrice:
    """A model's list price. input, output: USD per million input / output tokens."""

    input: float
    output: float

    def __post_init__(self):
        object.__setattr__(self, "input", _non_negative(self.input, "input", "USD per million tokens"))
        object.__setattr__(self, "output", _non_negative(self.output, "output", "USD per million tokens"))

    def request_cost(self, input_tokens, output_tokens):
        """USD for requests of the given token counts (numbers or arrays, broadcast)."""
        return (np.asarray(input_tokens) * self.input + np.asarray(output_tokens) * self.output) \
            / TOKENS_PER_MILLION


def _entry(model: str, spec, where: str) -> ModelPrice:
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
        price = _entry(display, spec, where)
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
                f'output tokens>}}}}, and load it with router_ml.costs.load_prices(path)')
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


def _builtin() -> PriceTable:
    text = resources.files("router_ml").joinpath("prices.json").read_text(encoding="utf-8")
    return PriceTable(_model_map(json.loads(text), BUILTIN_SOURCE), source=BUILTIN_SOURCE)


def load_prices(path=None, *, builtin: bool = True) -> PriceTable:
    """The price table (USD per million tokens): the built-in one (router_ml/prices.json),
    overridden and extended by the file at ``path`` if given (JSON, TOML or YAML). With
    ``builtin=False`` only the file's prices are used."""
    table = _builtin() if builtin else None
    if path is None:
        if table is None:
            raise ValueError("load_prices(builtin=False) needs a price file path")
        return table
    data = read_price_file(path)
    if table is None:
        return PriceTable(data, source=str(path))
    return table.merge(data, source=str(path), override=True)


def merge_dcrouter_prices(table: PriceTable | None = None, data_dir=None, *,
                          override: bool = False) -> PriceTable:
    """``table`` (default: the built-in one) plus the per-model prices of the dcrouter source
    (``llm_candidates.json``, USD per million tokens, see
    :func:`router_ml.data.load_dcrouter_prices`). A model already in ``table`` keeps its
    price unless ``override``: dcrouter's prices are one provider's, not list prices."""
    from router_ml.data import load_dcrouter_prices, resolve_data_dir

    table = table if table is not None else _builtin()
    prices = load_dcrouter_prices(data_dir)
    where = str(resolve_data_dir(data_dir) / "llmrouter-dcrouter" / "llm_candidates.json")
    return table.merge(prices, source=where, override=override)


def _prices(prices) -> PriceTable:
    if prices is None:
        return _builtin()
    if isinstance(prices, PriceTable):
        return prices
    if isinstance(prices, Mapping):
        return PriceTable(prices)
    raise TypeError(f"prices must be a PriceTable or a mapping, got {type(prices).__name__}")


# ---------------------------------------------------------------------------- traffic


@dataclass(frozen=True, eq=False)
class TrafficProfile:
    """How much traffic the router sees.

    requests_per_month: requests per month (>= 0).
    input_tokens, output_tokens: tokens per request, each either a mean (a number) or one
    count per prompt of a sample that stands for the traffic (a sequence; both sequences then
    have the same length). Per-prompt counts let costs follow which prompts the router sends
    to the strong model (see :func:`cost_curve`); share-based functions use the means.
    """

    requests_per_month: float
    input_tokens: float | np.ndarray
    output_tokens: float | np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "requests_per_month", _non_negative(
            self.requests_per_month, "requests_per_month", "requests per month"))
        object.__setattr__(self, "input_tokens", _tokens(self.input_tokens, "input_tokens"))
        object.__setattr__(self, "output_tokens", _tokens(self.output_tokens, "output_tokens"))
        lens = {len(a) for a in (self.input_tokens, self.output_tokens) if isinstance(a, np.ndarray)}
        if len(lens) > 1:
            raise ValueError(f"input_tokens and output_tokens hold counts for different numbers "
                             f"of prompts: {len(self.input_tokens)} vs {len(self.output_tokens)}")

    @classmethod
    def from_prompts(cls, prompts: Sequence[str], requests_per_month: float, output_tokens,
                     *, tokenizer=None, chars_per_token: float = CHARS_PER_TOKEN) -> "TrafficProfile":
        """A profile with per-prompt input token counts of a sample of prompts.

        Without a tokenizer, input tokens are approximated as ``len(prompt) / chars_per_token``
        (4 characters per token by default: a rule of thumb for English text and
        OpenAI-style BPE tokenizers, off by tens of percent for code or other languages).
        tokenizer: a callable ``str -> int`` (a count) or ``str -> sequence`` of tokens, or an
        object with ``encode`` (tiktoken, Hugging Face ``tokenizers``/``transformers``).
        output_tokens: mean output tokens per request, or one count per prompt (e.g. logged).
        """
        if isinstance(prompts, (str, bytes)):
            raise TypeError("prompts must be a list of str, got a single string")
        prompts = list(prompts)
        if not prompts:
            raise ValueError("from_prompts needs at least one prompt")
        cpt = _non_negative(chars_per_token, "chars_per_token", "characters per token")
        if cpt == 0:
            raise ValueError("chars_per_token must be > 0 (characters per token)")
        counts = np.array([_count_tokens(p, tokenizer, cpt) for p in prompts], dtype=np.float64)
        return cls(requests_per_month, counts, output_tokens)

    @property
    def n_prompts(self) -> int | None:
        """The number of prompts with per-prompt counts, or None when both are means."""
        for a in (self.input_tokens, self.output_tokens):
            if isinstance(a, np.ndarray):
                return len(a)
        return None

    @property
    def mean_input_tokens(self) -> float:
        return float(np.mean(self.input_tokens))

    @property
    def mean_output_tokens(self) -> float:
        return float(np.mean(self.output_tokens))

    def per_prompt(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(input, output) token counts as (n,) arrays: the per-prompt counts (whose length
        must be n) or the means repeated."""
        if self.n_prompts is not None and self.n_prompts != n:
            raise ValueError(f"the traffic profile holds token counts for {self.n_prompts} "
                             f"prompts but {n} scores were given; build the profile from the "
                             "same prompts (TrafficProfile.from_prompts) or give mean tokens")
        return (np.broadcast_to(self.input_tokens, (n,)).astype(np.float64),
                np.broadcast_to(self.output_tokens, (n,)).astype(np.float64))


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


def _count_tokens(text: str, tokenizer, chars_per_token: float) -> float:
    if not isinstance(text, str):
        raise TypeError(f"prompts must be str, got {type(text).__name__}")
    if tokenizer is None:
        return len(text) / chars_per_token
    out = tokenizer.encode(text) if hasattr(tokenizer, "encode") else tokenizer(text)
    if is_number(out):
        return float(out)
    return float(len(getattr(out, "ids", out)))


# ---------------------------------------------------------------------------- monthly costs


def monthly_cost(model: str, profile: TrafficProfile, prices=None) -> float:
    """USD per month of sending every request to ``model`` (mean tokens per request)."""
    p = _prices(prices)[model]
    per_request = profile.mean_input_tokens * p.input + profile.mean_output_tokens * p.output
    return profile.requests_per_month * per_request / TOKENS_PER_MILLION


def router_monthly_cost(share, profile: TrafficProfile, prices=None, *, strong: str = STRONG_MODEL,
                        weak: str = WEAK_MODEL):
    """USD per month when a fraction ``share`` of requests goes to ``strong`` and the rest to
    ``weak``, assuming the strong-routed requests have the mean token counts. share: a number
    or an array of fractions in [0, 1]; returns a float or an array of the same shape."""
    s = _share(share)
    table = _prices(prices)
    hi, lo = monthly_cost(strong, profile, table), monthly_cost(weak, profile, table)
    out = lo + s * (hi - lo)
    return float(out) if isinstance(s, float) else out


@dataclass(frozen=True)
class CostSummary:
    """The monthly bill at a strong-call share. Costs and saving in USD per month;
    saving_pct in percent (0-100) of the always-strong bill (0 when that bill is 0)."""

    share: float
    always_weak: float
    always_strong: float
    router: float
    saving_usd: float
    saving_pct: float


def _saving(cost, always_strong):
    usd = always_strong - cost
    pct = 100.0 * usd / always_strong if always_strong > 0 else 0.0 * usd
    return usd, pct


def cost_summary(share: float, profile: TrafficProfile, prices=None, *, strong: str = STRONG_MODEL,
                 weak: str = WEAK_MODEL) -> CostSummary:
    """Always-weak, always-strong and routed monthly cost at ``share``, and the saving."""
    s = _share(share)
    if not isinstance(s, float):
        raise ValueError("cost_summary takes one share; use router_monthly_cost for many")
    table = _prices(prices)
    lo, hi = monthly_cost(weak, profile, table), monthly_cost(strong, profile, table)
    cost = lo + s * (hi - lo)  # = router_monthly_cost(s, ...), without pricing both again
    usd, pct = _saving(cost, hi)
    return CostSummary(s, lo, hi, cost, float(usd), float(pct))


def saving(share, profile: TrafficProfile, prices=None, *, strong: str = STRONG_MODEL,
           weak: str = WEAK_MODEL):
    """(USD per month, percent) saved against always-strong when a fraction ``share`` of
    requests goes to the strong model. Works on a number or an array of shares."""
    table = _prices(prices)
    cost = router_monthly_cost(share, profile, table, strong=strong, weak=weak)
    return _saving(cost, monthly_cost(strong, profile, table))


@dataclass(frozen=True)
class CostCurve:
    """share: (n+1,) strong-call shares k/n, k = 0..n, prompts sorted by score (highest
    first, equal scores as a block, as in :func:`router_ml.evaluation.cost_quality_curve`);
    usd_per_month: (n+1,) the monthly cost at each share."""

    share: np.ndarray
    usd_per_month: np.ndarray

    @property
    def _slope(self) -> float:
        return float(self.usd_per_month[-1] - self.usd_per_month[0])  # USD/month per unit share

    @property
    def increasing(self) -> bool:
        """True when the cost never falls as the share grows and always-strong costs more than
        always-weak: then :meth:`share_at` inverts :meth:`at` (e.g. for a secondary plot axis)."""
        return self._slope > 0 and bool((np.diff(self.usd_per_month) >= 0).all())

    def at(self, share):
        """USD per month at share(s) (fractions), linear between curve points and, for plot
        axes that reach past the ends, beyond [0, 1] at the always-weak-to-strong slope."""
        x = np.asarray(share, dtype=np.float64)
        xc = np.clip(x, 0.0, 1.0)
        return np.interp(xc, self.share, self.usd_per_month) + self._slope * (x - xc)

    def share_at(self, usd):
        """The share (fraction) whose monthly cost is ``usd``: the inverse of :meth:`at`.
        ValueError unless the curve is :attr:`increasing`."""
        if not self.increasing:
            raise ValueError("the cost does not rise with the strong-call share (is the strong "
                             "model cheaper per token?); it cannot be inverted")
        u = np.asarray(usd, dtype=np.float64)
        lo, hi = self.usd_per_month[0], self.usd_per_month[-1]
        uc = np.clip(u, lo, hi)
        return np.interp(uc, self.usd_per_month, self.share) + (u - uc) / self._slope


def _per_prompt_costs(n: int, profile: TrafficProfile, table: PriceTable, strong: str, weak: str):
    """(n,) monthly cost of the traffic if every request were like prompt i, on each model."""
    tin, tout = profile.per_prompt(n)
    r = profile.requests_per_month
    return (r * table[strong].request_cost(tin, tout), r * table[weak].request_cost(tin, tout))


def cost_curve(scores, profile: TrafficProfile, prices=None, *, strong: str = STRONG_MODEL,
               weak: str = WEAK_MODEL) -> CostCurve:
    """Monthly cost (USD) at every strong-call share of the prompts behind ``scores`` (n,).

    With per-prompt token counts in ``profile`` (aligned with ``scores``) the cost follows
    which prompts go strong; with means it is linear in the share."""
    from router_ml.evaluation import cost_quality_curve

    s = np.asarray(scores, dtype=np.float64).ravel()
    if len(s) == 0:
        raise ValueError("scores holds no prompts")
    table = _prices(prices)
    c_strong, c_weak = _per_prompt_costs(len(s), profile, table, strong, weak)
    # The "quality" of routing k prompts to strong is here their mean monthly cost.
    c = cost_quality_curve(s, c_strong, c_weak)
    return CostCurve(c.share, c.quality)


def monthly_cost_at_threshold(scores, threshold: float, profile: TrafficProfile, prices=None, *,
                              strong: str = STRONG_MODEL, weak: str = WEAK_MODEL) -> float:
    """USD per month when the prompts behind ``scores`` are routed at ``threshold`` (strong
    iff score >= threshold); per-prompt token counts are used when the profile has them."""
    t = check_threshold(threshold)
    s = np.asarray(scores, dtype=np.float64).ravel()
    curve = cost_curve(s, profile, prices, strong=strong, weak=weak)
    return float(curve.usd_per_month[int((s >= t).sum())])


def threshold_for_budget(scores, budget: float, profile: TrafficProfile, prices=None, *,
                         strong: str = STRONG_MODEL, weak: str = WEAK_MODEL, q_strong=None,
                         q_weak=None, prompts: Sequence[str] | None = None
                         ) -> tuple[float, CalibrationRecord]:
    """The threshold with the largest strong-call share on ``scores`` whose monthly cost is
    at most ``budget`` (USD per month).

    scores: (n,) router scores of calibration prompts that stand for the traffic; profile: the
    traffic (per-prompt token counts, if any, aligned with ``scores``). q_strong, q_weak:
    optional (n,) qualities to record the achieved quality and PGR; prompts: optional, to
    fingerprint the calibration set. A budget below the always-weak bill raises
    CalibrationError; a budget at or above the always-strong bill gives share 1 (threshold 0).
    Returns (threshold, CalibrationRecord(method="budget")) for ``router.set_threshold``.
    """
    if not is_number(budget) or not math.isfinite(float(budget)) or float(budget) < 0:
        raise CalibrationError(f"budget must be a finite number >= 0 (USD per month), got {budget!r}")
    budget = float(budget)
    s = check_scores(scores)
    table = _prices(prices)
    n = len(s)
    curve = cost_curve(s, profile, table, strong=strong, weak=weak)
    always_weak = monthly_cost(weak, profile, table)
    always_strong = monthly_cost(strong, profile, table)
    tol = 1e-9 * max(1.0, abs(budget))  # costs summed two ways may differ in the last bits
    if budget + tol < always_weak:
        raise CalibrationError(
            f"a budget of ${budget:,.2f}/month is below the cost of sending every request to the "
            f"weak model {weak!r} (${always_weak:,.2f}/month at {profile.requests_per_month:,.0f} "
            "requests); raise the budget, lower the traffic or choose a cheaper weak model")
    t, k = candidate_thresholds(s)
    fits = curve.usd_per_month[k] <= budget + tol
    if not fits.any():
        raise CalibrationError(
            f"a budget of ${budget:,.2f}/month cannot be met on these {n} prompts: even threshold "
            f"1.0 sends {k[0]} prompts with score 1.0 to the strong model "
            f"(${curve.usd_per_month[k[0]]:,.2f}/month)")
    # The most strong calls within budget; of equal ones the lowest threshold (0.0 for all).
    best = int(np.flatnonzero(fits & (k == k[fits].max()))[-1])
    threshold, achieved_share = float(t[best]), k[best] / n
    k_at = int((s >= threshold).sum())
    cost = float(curve.usd_per_month[k_at])
    usd, pct = _saving(cost, always_strong)
    achieved = {"share": float(achieved_share), "monthly_cost_usd": cost,
                "saving_usd": float(usd), "saving_pct": float(pct)}
    if q_strong is not None and q_weak is not None:
        qs = np.asarray(q_strong, dtype=np.float64).ravel()
        qw = np.asarray(q_weak, dtype=np.float64).ravel()
        if not len(qs) == len(qw) == n:
            raise CalibrationError(f"scores, q_strong and q_weak differ in length: {n}, "
                                   f"{len(qs)}, {len(qw)}")
        quality = float(np.where(s >= threshold, qs, qw).mean())
        gap = qs.mean() - qw.mean()
        achieved["quality"] = quality
        achieved["pgr"] = float((quality - qw.mean()) / gap) if gap != 0 else None
    record = CalibrationRecord(
        "budget",
        {"budget_usd_per_month": budget, "requests_per_month": profile.requests_per_month,
         "strong": strong, "weak": weak, "prices": table.source},
        achieved, n, fingerprint(list(prompts)) if prompts is not None else "")
    return float(threshold), record


# ---------------------------------------------------------------------------- quality sampling


@dataclass(frozen=True)
class SamplingCost:
    """Re-sending a fraction ``rate`` of the weak-routed requests to the strong model too, to
    keep measuring what routing costs in quality. samples_per_month: requests re-sent per
    month; usd_per_month: their strong-model cost (the weak answer is paid for anyway)."""

    rate: float
    samples_per_month: float
    usd_per_month: float


def quality_sampling_cost(share: float, rate: float, profile: TrafficProfile, prices=None, *,
                          strong: str = STRONG_MODEL) -> SamplingCost:
    """The monthly cost of quality sampling at a strong-call ``share`` (fraction) and a
    sampling ``rate`` (fraction of weak-routed requests, e.g. 0.02-0.05), at mean tokens."""
    s = _share(share)
    if not isinstance(s, float):
        raise ValueError("quality_sampling_cost takes one share")
    if not is_number(rate) or not math.isfinite(float(rate)) or not 0 <= float(rate) <= 1:
        raise ValueError(f"rate must be a fraction in [0, 1] (share of weak-routed requests "
                         f"re-sent to the strong model), got {rate!r}")
    n = profile.requests_per_month * (1.0 - s) * float(rate)
    unit = float(_prices(prices)[strong].request_cost(profile.mean_input_tokens,
                                                       profile.mean_output_tokens))
    return SamplingCost(float(rate), n, n * unit)


__all__ = [
    "BUILTIN_SOURCE", "CHARS_PER_TOKEN", "CostCurve", "CostSummary", "ModelPrice", "PriceTable",
    "SamplingCost", "TrafficProfile", "cost_curve", "cost_summary", "load_prices",
    "merge_dcrouter_prices", "monthly_cost", "monthly_cost_at_threshold",
    "quality_sampling_cost", "read_price_file", "router_monthly_cost", "saving",
    "threshold_for_budget",
]


# ---------------------------------------------------------------------------- per prompt

OUTPUT_TOKENS = 256  # DESIGN.md: assumed output length where a data set has no token counts


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
            p = _entry(m, prices[m], "the router's price table")
        else:
            if table is None:
                table = PriceTable(prices or {}, source="the router's price table")
            p = table[m]
        rates.append((p.input, p.output))
    r = np.asarray(rates, dtype=np.float64).reshape(len(models), 2)
    if tokenizer is None:
        tokens = np.ceil(np.fromiter((len(p) for p in prompts), dtype=np.float64,
                                     count=len(prompts)) / 4)
    else:
        tokens = np.array([_count_tokens(p, tokenizer, 1.0) for p in prompts], dtype=np.float64)
    return (tokens[:, None] * r[:, 0] + output_tokens * r[:, 1]) / TOKENS_PER_MILLION


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
