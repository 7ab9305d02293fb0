"""``router-ml data fetch``: download the public training data, pinned and checked.

    router-ml data fetch [--dest DIR] [--source routellm-evals,...]
    router-ml data list

Every file of :mod:`router_ml.learn._fetch_registry` (upstream URL at a pinned commit, sha256, place
in the folder layout ``router_ml.learn.sources`` reads) is fetched with ``pooch.retrieve`` into
``DIR/<source>/<path>``, licences included. pooch downloads to a temporary file and moves it
into place only when its sha256 matches, so a corrupted or changed download is refused and
leaves nothing behind; files already present with the right digest are not downloaded again.

``DIR`` defaults to the user cache folder (``pooch.os_cache("router_ml")/data``, e.g.
``~/.cache/router_ml/data``); point the scripts at it with ``--data-dir`` or
``ROUTER_ML_DATA``. Without network access the error lists, for each missing file, the URL to
download and the path to put it at.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from router_ml.errors import FetchError


@dataclass(frozen=True)
class Entry:
    source: str
    path: str       # inside DIR/<source>/
    url: str
    sha256: str


def registry(sources: dict | None = None, files=None) -> list[Entry]:
    """The entries of the built-in registry (or of the ``sources``/``files`` given)."""
    from router_ml.learn._fetch_registry import FILES, SOURCES

    sources = SOURCES if sources is None else sources
    files = FILES if files is None else files
    return [Entry(s, path, sources[s]["base_url"].rstrip("/") + "/" + upstream, digest)
            for s, path, upstream, digest in files]


def _pooch():
    try:
        import pooch
    except ImportError:
        raise FetchError("router-ml data fetch needs pooch: pip install 'router_ml[train]'") \
            from None
    return pooch


def default_dest() -> Path:
    return Path(_pooch().os_cache("router_ml")) / "data"


def _ok(path: Path, digest: str) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest() == digest


def missing(dest, entries) -> list[Entry]:
    """Entries whose file is absent from ``dest`` or has another sha256."""
    return [e for e in entries if not _ok(Path(dest) / e.source / e.path, e.sha256)]


def instructions(dest, entries) -> str:
    lines = [f"download each file below and put it at the path shown ({len(entries)} files; "
             "the sha256 must match):"]
    for e in entries:
        lines.append(f"  {e.url}\n    -> {Path(dest) / e.source / e.path}  (sha256 {e.sha256})")
    lines.append("then run router-ml data fetch again to check them")
    return "\n".join(lines)


def fetch(dest=None, sources: list[str] | None = None, entries: list[Entry] | None = None,
          progress: bool = False) -> list[Path]:
    """Download the registry's files (of ``sources``, default all) into ``dest``; returns their
    paths. FetchError on a digest mismatch (nothing kept) or when the network is unreachable
    (the message says what to download where)."""
    pooch = _pooch()
    import requests

    dest = Path(dest) if dest is not None else default_dest()
    entries = registry() if entries is None else entries
    if sources:
        unknown = sorted(set(sources) - {e.source for e in entries})
        if unknown:
            raise FetchError(f"unknown source(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(sorted({e.source for e in entries}))}")
        entries = [e for e in entries if e.source in sources]
    out, unreachable = [], []
    for e in entries:
        target = dest / e.source / e.path
        try:
            path = pooch.retrieve(e.url, known_hash=f"sha256:{e.sha256}", fname=target.name,
                                  path=target.parent, progressbar=progress)
        except ValueError as err:  # pooch: hash mismatch; the temporary file is gone
            raise FetchError(f"{e.url}: the download does not match its pinned sha256 "
                             f"({err}); nothing was written to {target}. The upstream file "
                             f"changed or the download was damaged: retry, or put the reference "
                             f"file there by hand") from None
        except (requests.exceptions.RequestException, OSError) as err:
            unreachable.append((e, err))
            continue
        out.append(Path(path))
    if unreachable:
        first = unreachable[0][1]
        raise FetchError(f"cannot download {len(unreachable)} of {len(entries)} files "
                         f"({type(first).__name__}: {str(first)[:200]}); "
                         + instructions(dest, [e for e, _ in unreachable]))
    return out






__all__ = ["Entry", "default_dest", "fetch", "missing", "registry",]
