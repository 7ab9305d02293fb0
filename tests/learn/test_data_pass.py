"""The protocols' folds, pinned: a fingerprint (sha256) of every fold's prompts, qualities,
models, groups, sources, costs, dropped rows and difficulty, computed before the data path was
changed to load each source once and build rows without a Dataset in between. Any change of a
fold's content changes its fingerprint. Needs the shared data (skips without it)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from router_ml.errors import DataNotFoundError


def _update(h, a):
    if a is None:
        h.update(b"none")
        return
    a = np.asarray(a)
    if a.dtype == object:
        h.update("\x1f".join(map(str, a.tolist())).encode())
    else:
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())


def rows_fingerprint(rows) -> str:
    h = hashlib.sha256()
    h.update("\x1e".join(rows.prompts).encode())
    for a in (rows.quality, np.array(rows.models, dtype=object), rows.groups, rows.sources,
              rows.costs):
        _update(h, a)
    return h.hexdigest()[:16]


def folds_fingerprint(folds) -> str:
    h = hashlib.sha256()
    for f in folds:
        h.update(f"{f.protocol}|{f.k}|{f.dropped}".encode())
        h.update(rows_fingerprint(f.train).encode())
        h.update(rows_fingerprint(f.test).encode())
        h.update(b"-" if f.outcomes is None else rows_fingerprint(f.outcomes).encode())
        _update(h, f.difficulty)
    return h.hexdigest()[:16]


CASES = {
    "mmlu": "bf3aaf3870ea3f06",
    "mmlu-subjects": "58554b336375a209",
    "gsm8k": "3a6f7a06a048f71d",
    "mmlu-to-gsm8k": "bb3ff325268dcf03",
    "arena-hard": "ceee8461b5dd097e",
    "alpaca-eval": "5ce236db4f5abf91",
    "loso-mmlu": "73de52dd8c4e3ed3",
    "loso-gsm8k": "1f646df8deda021b",
    "loso-arena-hard": "1471a9c3d28b0028",
    "mixed": "963168544e9ac054",
    "dcrouter": "4c6b9feafa4e4229",
    "alpaca-tiers": "02b5e9764a2f12fa",
    "arena-rated": "c6b7181921de5c1c",
    "arena-battles": "c950a37042859644",
    "mmlu+outcomes": "844f5dd1712e6964",
    "arena-rated+outcomes": "973ebc561ec21e87",
    "dcrouter+outcomes": "c6b800b6ff678e84",
    "gsm8k+extra": "d303146073b337ad",
    "arena-rated+extra": "42a1e47e83b1cab3",
}


def _folds(case: str, data_dir):
    from router_ml.learn.protocols import protocol_folds, with_outcomes

    name, _, how = case.partition("+")
    if how == "outcomes":
        return with_outcomes(protocol_folds(name, data_dir), data_dir=data_dir)
    if how == "extra":
        return protocol_folds(name, data_dir, extra=("arena-hard", "alpaca-eval"))
    return protocol_folds(name, data_dir)


@pytest.fixture(scope="module")
def data_dir():
    from router_ml.learn.sources import resolve_data_dir

    try:
        d = resolve_data_dir()
    except DataNotFoundError as e:
        pytest.skip(f"no data folder ({e}); set ROUTER_ML_DATA")
    if not (d / "arena-battles-2023").is_dir():
        pytest.skip(f"{d} lacks arena-battles-2023")
    return d


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_protocols_folds_are_what_they_were(case, data_dir):
    assert folds_fingerprint(_folds(case, data_dir)) == CASES[case]


def test_a_source_is_read_once_and_its_callers_cannot_change_it(data_dir):
    from router_ml.learn.sources import read_source, source_rows

    a, b = source_rows("dcrouter/test", data_dir), source_rows("dcrouter/test", data_dir)
    assert read_source("dcrouter/test", data_dir.resolve()) is read_source(
        "dcrouter/test", data_dir.resolve())
    assert a.prompts == b.prompts and a.prompts is not b.prompts
    a.prompts.append("changed")
    assert len(source_rows("dcrouter/test", data_dir)) == len(b)
    for arr in (a.quality, a.groups, a.sources, a.costs):
        if arr is not None:
            with pytest.raises(ValueError):
                arr[0] = arr[1]
