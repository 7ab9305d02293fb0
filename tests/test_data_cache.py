"""router_ml.data.load_table keeps no copy of a user's file outside a folder the user chose."""

from __future__ import annotations

import pytest

from router_ml.data import load_table


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_load_table_leaves_no_copy_in_the_datasets_cache(tmp_path, monkeypatch, suffix):
    import datasets

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # honour TMPDIR above
    secret = "my private prompt about payroll"
    path = tmp_path / f"logs{suffix}"
    if suffix == ".csv":
        path.write_text(f"prompt,a,b\n{secret} 1,1,0\nsecond row,0,1\n")
    else:
        path.write_text(f'{{"prompt": "{secret} 1", "a": 1, "b": 0}}\n'
                        '{"prompt": "second row", "a": 0, "b": 1}\n')
    ds = load_table(path)
    assert len(ds) == 2
    assert [p for p in cache.rglob("*") if p.is_file()] == []
    assert list((tmp_path / "tmp").iterdir()) == []  # the temporary folder is gone

    chosen = tmp_path / "chosen"
    assert len(load_table(path, cache_dir=chosen)) == 2
    assert any(p.suffix == ".arrow" for p in chosen.rglob("*"))  # only where the user said
    assert [p for p in cache.rglob("*") if p.is_file()] == []
