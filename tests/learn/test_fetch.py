"""router_ml.learn.fetch against a local HTTP server on 127.0.0.1 serving fixture files: a good
download lands in the destination; a corrupted one is refused and leaves nothing."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import pytest

pytest.importorskip("pooch")

from router_ml.errors import FetchError  # noqa: E402
from router_ml.learn.fetch import Entry, fetch, missing, registry  # noqa: E402


@pytest.fixture
def http_root(tmp_path):
    """(base URL, folder it serves, request log); stopped after the test."""
    root = tmp_path / "upstream"
    root.mkdir()
    seen = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            seen.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, seen
    finally:
        server.shutdown()
        server.server_close()


def _entries(base, files: dict[str, bytes], source="demo"):
    return [Entry(source, path, f"{base}/{path}", hashlib.sha256(b).hexdigest())
            for path, b in files.items()]


def test_good_download_lands_in_dest(http_root, tmp_path):
    base, root, seen = http_root
    files = {"LICENSE": b"MIT licence text\n", "mmlu/responses/mmlu_x.csv": b"prompt,a,b\nq,1,0\n"}
    for path, b in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b)
    entries = _entries(base, files)
    dest = tmp_path / "dest"
    assert missing(dest, entries) == entries
    paths = fetch(dest, entries=entries)
    assert [p.read_bytes() for p in paths] == list(files.values())
    assert (dest / "demo" / "mmlu" / "responses" / "mmlu_x.csv").read_bytes() == files[
        "mmlu/responses/mmlu_x.csv"]
    assert missing(dest, entries) == []
    n = len(seen)
    fetch(dest, entries=entries)  # present and verified: not downloaded again
    assert len(seen) == n


def test_corrupted_download_is_refused_and_nothing_is_left(http_root, tmp_path):
    base, root, _ = http_root
    good = b"question,score\n1,9\n"
    (root / "q.csv").write_bytes(good[:-2] + b"X\n")  # what the server hands out is damaged
    entries = _entries(base, {"q.csv": good})
    dest = tmp_path / "dest"
    with pytest.raises(FetchError, match="does not match its pinned sha256"):
        fetch(dest, entries=entries)
    left = [p for p in dest.rglob("*") if p.is_file()] if dest.exists() else []
    assert left == []
    # a damaged file already in place is replaced by a good download, never kept
    (root / "q.csv").write_bytes(good)
    (dest / "demo").mkdir(parents=True, exist_ok=True)
    (dest / "demo" / "q.csv").write_bytes(b"stale")
    fetch(dest, entries=entries)
    assert (dest / "demo" / "q.csv").read_bytes() == good


def test_unreachable_upstream_says_what_to_download_where(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entries = [Entry("demo", "a.csv", f"http://127.0.0.1:{port}/a.csv", "0" * 64)]
    with pytest.raises(FetchError) as info:
        fetch(tmp_path / "dest", entries=entries)
    msg = str(info.value)
    assert f"http://127.0.0.1:{port}/a.csv" in msg
    assert str(tmp_path / "dest" / "demo" / "a.csv") in msg
    assert "sha256 " + "0" * 64 in msg


def test_builtin_registry_matches_the_reference_copies(shared):
    entries = registry()
    assert {e.source for e in entries} == {"routellm-evals", "arena-hard-v1", "llmrouter-dcrouter"}
    assert all(e.url.startswith("https://raw.githubusercontent.com/") for e in entries)
    assert sum(e.path.startswith("mmlu/responses/") for e in entries) == 57
    assert {e.source for e in entries if e.path == "LICENSE"} == {e.source for e in entries}
    assert missing(shared, entries) == []  # every pinned digest is the reference file's


def test_data_cli_list_and_check(shared, capsys):
    from router_ml.cli.main import main

    assert main(["data", "list"]) == 0
    assert "routellm-evals: 61 files from lm-sys/RouteLLM" in capsys.readouterr().out
    assert main(["data", "fetch", "--check", "--dest", str(shared)]) == 0
    assert "82 of 82 files present" in capsys.readouterr().out
