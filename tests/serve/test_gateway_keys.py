"""Client keys of ``router-ml serve --keys``: 401 without a valid key, 429 past a budget, a rate
or a concurrency limit, the key's name in the decision log and never its secret anywhere, the
keys file's errors, the loopback rule, and the counters' store (SQLite, Redis) across worker
processes. Everything on 127.0.0.1 with OS-assigned ports, bounded traffic."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("litellm")
httpx = pytest.importorskip("httpx")

from llm_stub import Slow, StubLLM  # noqa: E402
from servers import child_env, free_port, process, uvicorn_thread  # noqa: E402

from router_ml.cli.keys import keys_main  # noqa: E402
from router_ml.errors import KeysFileError  # noqa: E402
from router_ml.serve.keys import (  # noqa: E402
    ClientKey,
    hash_secret,
    load_keys,
    new_secret,
    parse_keys,
)
from router_ml.serve.quota import LEASE_SECONDS, SQLiteQuota, open_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PRICE = 10_000.0  # USD per million tokens, input and output: the stub's answer costs 0.25 USD
STUB_COST = (24 + 1) * PRICE / 1e6  # 24 prompt tokens (one message), 1 completion token ("ok")
RULES = {"rules": [{"name": "all", "regex": ".", "model": "strong"}]}


def _answer(messages):
    text = messages[-1]["content"]
    return Slow(1.5, "ok") if "[slow]" in text else "ok"


def _chat(base, secret=None, prompt="hello", headers=None):
    h = dict(headers or {})
    if secret is not None:
        h["Authorization"] = f"Bearer {secret}"
    return httpx.post(f"{base}/v1/chat/completions", timeout=30, headers=h, json={
        "model": "router", "messages": [{"role": "user", "content": prompt}]})


def _keys_file(path: Path, limits: dict) -> dict:
    """Write a TOML keys file with one key per ``limits`` entry; returns {name: secret}."""
    secrets_, lines = {}, []
    for name, lim in limits.items():
        secrets_[name] = s = new_secret()
        lines += ["[[keys]]", f'name = "{name}"', f'sha256 = "{hash_secret(s)}"']
        lines += [f"{k} = {json.dumps(v)}" for k, v in lim.items()] + [""]
    path.write_text("\n".join(lines))
    return secrets_


def _away_from_a_minute_boundary(margin: float = 10.0):
    """Requests-per-minute windows are UTC clock minutes: start a check well inside one."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.2)


@pytest.fixture(scope="module")
def gateway(make_router, tmp_path_factory):
    from router_ml.core.prices import PriceTable
    from router_ml.loop.decision_log import DecisionLog
    from router_ml.loop.rules import parse_rules
    from router_ml.serve.endpoint import create_app

    tmp = tmp_path_factory.mktemp("gateway")
    secrets_ = _keys_file(tmp / "keys.toml", {
        "alice": {}, "bob": {},
        "budget": {"usd_per_day": 2.5 * STUB_COST},
        "monthly": {"usd_per_month": 1.5 * STUB_COST},
        "rpm": {"requests_per_minute": 3},
        "single": {"max_concurrent": 1}})
    log = DecisionLog(tmp / "log")
    store = open_store(f"sqlite:///{tmp / 'log' / 'quota.sqlite'}")
    prices = PriceTable({"strong": {"input": PRICE, "output": PRICE},
                         "weak": {"input": PRICE, "output": PRICE}})
    with StubLLM({}, default=_answer, max_requests=200) as stub:
        app = create_app(make_router("tfidf"), stub.url, "upstream-key", timeout=5,
                         config=parse_rules(RULES), log=log, prices=prices,
                         keys=load_keys(tmp / "keys.toml"), quota=store)
        with uvicorn_thread(app) as base:
            yield base, secrets_, log, store, stub
        app.state.close()
    store.close()


def test_no_key_or_a_wrong_key_gets_401_and_health_needs_none(gateway):
    base, secrets_, *_ = gateway
    r = _chat(base)
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "missing_api_key"
    assert "Authorization: Bearer" in err["message"]
    assert r.headers["www-authenticate"] == "Bearer"
    wrong = secrets_["alice"][:-4] + "abcd"
    for sent in (wrong, hash_secret(secrets_["alice"])):  # the stored hash is no key either
        r = _chat(base, sent)
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert sent not in r.text and sent[:12] not in r.text
    r = _chat(base, headers={"Authorization": f"Basic {secrets_['alice']}"})
    assert r.status_code == 401  # only Bearer
    for path in ("/v1/models", "/metrics"):
        assert httpx.get(f"{base}{path}", timeout=10).status_code == 401
    assert httpx.post(f"{base}/v1/feedback", timeout=10,
                      json={"request_id": "x", "score": 1}).status_code == 401
    assert httpx.get(f"{base}/health", timeout=10).status_code == 200
    auth = {"Authorization": f"Bearer {secrets_['alice']}"}
    assert httpx.get(f"{base}/v1/models", headers=auth, timeout=10).status_code == 200
    assert httpx.get(f"{base}/metrics", headers=auth, timeout=10).status_code == 200
    r = _chat(base, secrets_["alice"])
    assert r.status_code == 200 and r.headers["x-router-model"] == "strong"


def test_a_key_past_its_daily_budget_gets_429_with_retry_after(gateway):
    base, secrets_, log, store, _ = gateway
    statuses = []
    for _ in range(8):
        r = _chat(base, secrets_["budget"])
        statuses.append(r.status_code)
        if r.status_code == 429:
            break
    admitted = statuses.count(200)
    assert statuses == [200] * admitted + [429]
    err = r.json()["error"]
    assert err["code"] == "usd_per_day" and err["type"] == "insufficient_quota"
    assert "'budget'" in err["message"] and "UTC day" in err["message"]
    now = dt.datetime.now(dt.timezone.utc)
    midnight = (now.replace(hour=0, minute=0, second=0, microsecond=0)
                + dt.timedelta(days=1))
    wait = int(r.headers["retry-after"])
    assert 0 < wait <= 86400 and abs(wait - (midnight - now).total_seconds()) <= 5
    # admitted while the spend was below the budget; the spend is the logged cost
    costs = [row["cost_usd"] for row in log.read() if row["client"] == "budget"]
    assert len(costs) == admitted
    assert sum(costs[:-1]) < 2.5 * STUB_COST <= sum(costs)
    assert store.spent("budget")[0] == pytest.approx(sum(costs))
    assert _chat(base, secrets_["bob"]).status_code == 200  # other keys are not affected


def test_a_monthly_budget(gateway):
    base, secrets_, *_ = gateway
    codes = [_chat(base, secrets_["monthly"]) for _ in range(3)]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert codes[-1].json()["error"]["code"] == "usd_per_month"
    assert int(codes[-1].headers["retry-after"]) <= 31 * 86400


def test_requests_per_minute(gateway):
    base, secrets_, *_ = gateway
    _away_from_a_minute_boundary()
    rs = [_chat(base, secrets_["rpm"]) for _ in range(5)]
    assert [r.status_code for r in rs] == [200, 200, 200, 429, 429]
    err = rs[3].json()["error"]
    assert err["code"] == "requests_per_minute" and err["type"] == "rate_limit_error"
    assert 0 < int(rs[3].headers["retry-after"]) <= 60


def test_concurrency_per_key(gateway):
    base, secrets_, _, _, stub = gateway
    n = len(stub.requests)
    out = {}
    slow = threading.Thread(target=lambda: out.update(r=_chat(base, secrets_["single"],
                                                              "[slow] take your time")))
    slow.start()
    deadline = time.monotonic() + 20
    while len(stub.requests) == n and time.monotonic() < deadline:  # it reached the upstream
        time.sleep(0.02)
    r = _chat(base, secrets_["single"])
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "max_concurrent" and r.headers["retry-after"] == "1"
    assert _chat(base, secrets_["alice"]).status_code == 200  # per key
    slow.join(30)
    assert out["r"].status_code == 200
    assert _chat(base, secrets_["single"]).status_code == 200  # the slot was freed


def test_the_log_names_the_key_and_nothing_holds_a_secret(gateway, capfd):
    base, secrets_, log, store, _ = gateway
    assert _chat(base, secrets_["bob"], "a logged prompt").status_code == 200
    assert _chat(base, secrets_["alice"], "another one").status_code == 200
    _chat(base, secrets_["bob"][::-1])  # a wrong one: not written anywhere either
    metrics = httpx.get(f"{base}/metrics", timeout=10,
                        headers={"Authorization": f"Bearer {secrets_['bob']}"}).text
    rows = log.read()
    assert {"alice", "bob"} <= {r["client"] for r in rows}
    assert all(r["client"] for r in rows)  # every request came with a key
    row = [r for r in rows if r["client"] == "bob"][-1]
    assert row["cost_usd"] == pytest.approx(STUB_COST)
    captured = capfd.readouterr()
    texts = [json.dumps(rows), metrics, captured.out, captured.err,
             b"".join(p.read_bytes() for p in store.path.parent.glob("quota.sqlite*"))
             .decode("latin-1")]
    for s in secrets_.values():
        for t in texts:
            assert s not in t and s[::-1] not in t and s[3:15] not in t


def test_a_streamed_answer_is_logged_and_counted(make_router, tmp_path):
    from test_serving import stub_upstream  # it streams (llm_stub answers in one piece)

    from router_ml.core.prices import PriceTable
    from router_ml.loop.decision_log import DecisionLog
    from router_ml.loop.rules import parse_rules
    from router_ml.serve.endpoint import create_app
    from router_ml.serve.keys import KeyRing

    secret = new_secret()
    log, store = DecisionLog(tmp_path / "log"), open_store(f"sqlite:///{tmp_path / 'q.sqlite'}")
    up, _ = stub_upstream()
    with uvicorn_thread(up) as upstream:
        app = create_app(make_router("tfidf"), f"{upstream}/v1", "upstream-key", timeout=5,
                         config=parse_rules(RULES), log=log, quota=store,
                         prices=PriceTable({"strong": {"input": PRICE, "output": PRICE},
                                            "weak": {"input": PRICE, "output": PRICE}}),
                         keys=KeyRing([ClientKey("streamer", hash_secret(secret))]))
        with uvicorn_thread(app) as base, httpx.stream(
                "POST", f"{base}/v1/chat/completions", timeout=30,
                headers={"Authorization": f"Bearer {secret}"},
                json={"model": "router", "stream": True,
                      "messages": [{"role": "user", "content": "stream it"}]}) as r:
            assert r.status_code == 200
            assert [line for line in r.iter_lines() if line][-1] == "data: [DONE]"
        app.state.close()
    (row,) = log.read()
    assert row["client"] == "streamer" and row["cost_usd"] > 0
    assert store.spent("streamer")[0] == pytest.approx(row["cost_usd"])
    store.close()


def test_an_unreachable_store_refuses_rather_than_lets_through(make_router):
    from router_ml.serve.endpoint import create_app
    from router_ml.serve.keys import KeyRing

    class Down:
        inline = True

        def admit(self, key):
            raise ConnectionError("the store is down")

    secret = new_secret()
    keys = KeyRing([ClientKey("a", hash_secret(secret))])
    with StubLLM({}, default="ok", max_requests=5) as stub:
        app = create_app(make_router("tfidf"), stub.url, keys=keys, quota=Down())
        with uvicorn_thread(app) as base:
            r = _chat(base, secret)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "quota_store_unavailable"
            assert secret not in r.text
        assert stub.requests == []
        app.state.close()


def test_old_log_files_get_the_client_column(tmp_path):
    import sqlite3

    from router_ml.loop.decision_log import COLUMNS, DecisionLog
    from router_ml.loop.policy import Decision

    old = [c for c in COLUMNS if c != "client"]
    f = tmp_path / "decisions.sqlite"
    con = sqlite3.connect(f)
    con.execute(f"CREATE TABLE decisions ({', '.join(old)})")
    con.close()
    with DecisionLog(tmp_path, rotate="none") as log:
        log.write(Decision("r1", "0" * 64, "m", "rule", time=1e9, client="alice"))
    assert DecisionLog(tmp_path, rotate="none").read()[0]["client"] == "alice"


@pytest.mark.parametrize("text,suffix,wants", [
    ('[[keys]]\nname = "a"\n', ".toml", "keys[0] ('a'): sha256 must be"),
    ('[[keys]]\nname = "a"\nsecret = "rk-x"\n', ".toml", "holds no secrets"),
    ('[[keys]]\nname = "a"\nsha256 = "{h}"\n[[keys]]\nname = "a"\nsha256 = "{g}"\n', ".toml",
     "keys[1] ('a'): the name 'a' is used twice"),
    ('[[keys]]\nname = "a"\nsha256 = "{h}"\n[[keys]]\nname = "b"\nsha256 = "{h}"\n', ".toml",
     "keys[1] ('b'): the same sha256"),
    ('[[keys]]\nname = "a"\nsha256 = "{h}"\nusd_per_day = -1\n', ".toml",
     "usd_per_day must be a number of USD > 0"),
    ('[[keys]]\nname = "a"\nsha256 = "{h}"\nmax_concurrent = 1.5\n', ".toml",
     "max_concurrent must be a whole number > 0"),
    ('[[keys]]\nname = "a"\nsha256 = "{h}"\nrpm = 3\n', ".toml", "unknown fields rpm"),
    ('[[keys]\n', ".toml", "cannot parse"),
    ('{"keys": {}}', ".json", "expected a list of keys"),
    ('{"keys": []}', ".json", "lists no keys"),
    ("keys:\n  - name: a\n    sha256: {h}\n  - 3\n", ".yaml", "keys[1]: each key"),
    ("keys: [", ".yaml", "cannot parse"),
    ("x", ".ini", "use a .toml, .json, .yaml"),
])
def test_keys_file_errors_name_the_file_and_the_entry(tmp_path, text, suffix, wants):
    f = tmp_path / f"keys{suffix}"
    f.write_text(text.replace("{h}", "a" * 64).replace("{g}", "b" * 64))
    with pytest.raises(KeysFileError) as e:
        load_keys(f)
    assert str(f) in str(e.value) and wants in str(e.value)


def test_serve_names_a_bad_keys_file(tmp_path, capsys):
    from router_ml.cli.serve import serve_main

    f = tmp_path / "keys.toml"
    f.write_text('[[keys]]\nname = "a"\nsha256 = "nothex"\n')
    assert serve_main(["--model", str(ROOT / "models" / "default"), "--upstream-base",
                       "http://127.0.0.1:9/v1", "--keys", str(f)]) == 2
    err = capsys.readouterr().err
    assert "KeysFileError" in err and str(f) in err and "keys[0] ('a')" in err
    assert serve_main(["--model", "x", "--upstream-base", "http://127.0.0.1:9/v1", "--keys",
                       str(tmp_path / "none.toml")]) == 2
    assert "none.toml does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["toml", "json", "yaml"])
def test_keys_new_prints_a_secret_and_an_entry_that_loads(tmp_path, capsys, fmt):
    assert keys_main(["new", "carol", "--format", fmt, "--usd-per-day", "2",
                      "--requests-per-minute", "30"]) == 0
    out = capsys.readouterr().out
    secret = out.split("\n")[1]
    assert secret.startswith("rk-") and len(secret) == 46
    entry = out.split(f"keys file entry ({fmt}):\n")[1]
    assert secret not in entry and hash_secret(secret) in entry
    f = tmp_path / f"keys.{fmt}"
    f.write_text({"toml": entry, "json": '{"keys": [' + entry + "]}",
                  "yaml": "keys:\n" + entry}[fmt])
    ring = load_keys(f)
    key = ring.authenticate(secret)
    assert key == ClientKey("carol", hash_secret(secret), usd_per_day=2.0,
                            requests_per_minute=30)
    assert ring.authenticate(secret + "x") is None and ring.authenticate("") is None
    assert keys_main(["new", "two words"]) == 2
    assert keys_main(["new", "dave"]) == 0
    assert capsys.readouterr().out.split("\n")[1] != secret  # fresh every time


def test_is_loopback():
    from router_ml.serve.endpoint import is_loopback

    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "192.168.1.2",
                                     "example.com", "128.0.0.1"]))


def test_serve_refuses_a_public_host_without_keys(capsys, monkeypatch):
    import uvicorn

    from router_ml.cli.serve import serve_main

    ran = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: ran.append(kw))
    model = str(ROOT / "models" / "default")
    port = free_port()
    base = ["--model", model, "--upstream-base", "http://127.0.0.1:9/v1", "--port", str(port)]
    assert serve_main(base + ["--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "--host 0.0.0.0 is not a loopback address" in err and "--keys FILE" in err
    assert "--allow-unauthenticated" in err
    assert ran == []
    assert serve_main(base + ["--host", "0.0.0.0", "--allow-unauthenticated"]) == 0
    out, err = capsys.readouterr()
    assert "warning: serving on 0.0.0.0 without client keys" in err
    assert [(kw["host"], kw["port"]) for kw in ran] == [("0.0.0.0", port)]
    assert serve_main(base + ["--host", "127.0.0.1"]) == 0
    assert "warning" not in capsys.readouterr().err


# ------------------------------------------------------------------ the stores


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    pytest.importorskip("redis", reason="the redis package is not installed")
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; make "
                    "install does)")
    import redis

    port = free_port()
    log = tmp_path_factory.mktemp("redis") / "redis.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no"], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            r = redis.Redis(port=port)
            deadline = time.monotonic() + 20
            while True:
                try:
                    r.ping()
                    break
                except redis.ConnectionError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail("redis-server did not start:\n" + log.read_text()[-2000:])
                    time.sleep(0.1)
            r.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'quota.sqlite'}"
    url = request.getfixturevalue("redis_url")
    import redis

    redis.Redis.from_url(url).flushdb()
    return url


def test_store_limits_and_their_retry_after(store_url):
    store = open_store(store_url)
    k = ClientKey("u", "0" * 64, usd_per_day=1.0, usd_per_month=1.5, requests_per_minute=2,
                  max_concurrent=2)
    now = dt.datetime(2027, 1, 15, 12, 0, 10, tzinfo=dt.timezone.utc).timestamp()
    a1, a2 = store.admit(k, now), store.admit(k, now)
    assert a1.ok and a2.ok and a1.lease != a2.lease
    a = store.admit(k, now)
    assert (a.ok, a.reason, a.retry_after) == (False, "requests_per_minute", 50)
    a = store.admit(k, now + 60)  # a new minute; two requests still in flight
    assert (a.ok, a.reason, a.retry_after) == (False, "max_concurrent", 1)
    store.release(a1)
    a3 = store.admit(k, now + 60)
    assert a3.ok
    store.spend("u", 1.0, now)
    a = store.admit(k, now + 70)
    assert (a.ok, a.reason, a.retry_after) == (False, "usd_per_day", 86400 - 12 * 3600 - 10 - 70)
    assert "'u' has spent $1 of its $1 budget" in a.message
    for x in (a2, a3):
        store.release(x)
    assert store.admit(k, now + 86400).ok  # a new day
    store.spend("u", 0.6, now + 86400)
    assert store.spent("u", now + 86400) == pytest.approx((0.6, 1.6))
    a = store.admit(k, now + 86400 + 60)
    month_end = dt.datetime(2027, 2, 1, tzinfo=dt.timezone.utc).timestamp()
    assert (a.ok, a.reason, a.retry_after) == (False, "usd_per_month",
                                               month_end - (now + 86400 + 60))
    # a slot whose worker died is freed after LEASE_SECONDS
    k2 = ClientKey("v", "1" * 64, max_concurrent=1)
    assert store.admit(k2, now).ok and not store.admit(k2, now + 1).ok
    a = store.admit(k2, now + LEASE_SECONDS + 1)
    assert a.ok and not store.admit(k2, now + LEASE_SECONDS + 2).ok
    store.settle(a, 0.25, now)  # spend and release at once
    assert store.spent("v", now) == pytest.approx((0.25, 0.25))
    assert store.admit(k2, now + LEASE_SECONDS + 3).ok
    store.close()


def test_redis_store_awaited_calls_count_as_the_blocking_ones(redis_url):
    """The gate awaits aadmit/asettle (redis.asyncio, no worker thread); they share the
    counters, the script and the rules of admit/settle."""
    import asyncio

    import redis

    redis.Redis.from_url(redis_url).flushdb()
    store = open_store(redis_url)
    k = ClientKey("a", "3" * 64, usd_per_day=1.0, requests_per_minute=3, max_concurrent=2)
    now = dt.datetime(2027, 1, 15, 12, 0, 10, tzinfo=dt.timezone.utc).timestamp()

    async def run():
        a1 = await store.aadmit(k, now)
        a2 = store.admit(k, now)  # the blocking call sees the awaited one's slot
        full = await store.aadmit(k, now)
        await store.asettle(a1, 0.4, now)
        a3 = await store.aadmit(k, now)
        over = await store.aadmit(k, now)
        return a1, a2, full, a3, over

    a1, a2, full, a3, over = asyncio.run(run())
    assert a1.ok and a2.ok and a3.ok
    assert (full.ok, full.reason) == (False, "max_concurrent")
    assert (over.ok, over.reason) == (False, "requests_per_minute")
    assert store.spent("a", now) == pytest.approx((0.4, 0.4))
    store.settle(a2, 0.7, now)
    assert store.spent("a", now) == pytest.approx((1.1, 1.1))
    late = asyncio.run(store.aadmit(k, now + 60))
    assert (late.ok, late.reason) == (False, "usd_per_day")
    store.close()


def test_store_admits_no_more_than_the_limit_from_many_connections(store_url):
    # a store object per thread: separate connections, as separate processes have
    k = ClientKey("w", "2" * 64, requests_per_minute=37, max_concurrent=10_000)
    now = dt.datetime(2027, 1, 15, 12, 0, 10, tzinfo=dt.timezone.utc).timestamp()
    stores = [open_store(store_url) for _ in range(6)]
    admitted = []

    def hammer(s):
        admitted.extend(a for a in (s.admit(k, now) for _ in range(12)) if a.ok)

    threads = [threading.Thread(target=hammer, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(admitted) == 37  # 72 tries
    for s in stores:
        s.close()


def test_open_store_rejects_unknown_urls(tmp_path):
    from router_ml.errors import ServingError

    with pytest.raises(ServingError, match="sqlite:///PATH"):
        open_store("postgres://x")
    assert isinstance(open_store(f"sqlite:///{tmp_path / 'q.sqlite'}"), SQLiteQuota)


# ------------------------------------------------------------------ worker processes


@contextlib.contextmanager
def _serve_workers(tmp_path, stub, store: str, limits: dict):
    secrets_ = _keys_file(tmp_path / "keys.toml", limits)
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nname = "all"\nregex = "."\nmodel = "gpt-4-1106-preview"\n')
    port = free_port()
    cmd = [sys.executable, "-m", "router_ml.cli.main", "serve", "--model",
           str(ROOT / "models" / "default"), "--upstream-base", stub.url, "--port", str(port),
           "--workers", "2", "--keys", str(tmp_path / "keys.toml"), "--quota-store", store,
           "--rules", str(rules), "--log", str(tmp_path / "log"), "--flush-seconds", "0.2"]
    with process(cmd, f"http://127.0.0.1:{port}/health", tmp_path / "serve.log",
                 env=child_env()) as proc:
        import psutil

        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while len(psutil.Process(proc.pid).children()) < 2:  # both workers (not only one)
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.2)
        for _ in range(40):  # both workers answer /health once they are up
            httpx.get(f"{base}/health", timeout=10, headers={"Connection": "close"})
        yield base, secrets_
    text = (tmp_path / "serve.log").read_text()
    assert "keys:     " in text and "2 worker processes" in text


def _check_across_workers(tmp_path, store):
    from router_ml.core.prices import load_prices
    from router_ml.loop.decision_log import DecisionLog

    cost = float(load_prices()["gpt-4-1106-preview"].request_cost(24, 1))
    budget = 3.5 * cost  # the fourth request passes it
    with StubLLM({}, default="ok", max_requests=300) as stub, \
            _serve_workers(tmp_path, stub, store, {
                "budget": {"usd_per_day": budget, "max_concurrent": 1},
                "rpm": {"requests_per_minute": 6}}) as (base, secrets_):
        _away_from_a_minute_boundary(12)
        results = {"budget": [], "rpm": []}

        def client(name, tries):
            for _ in range(tries):
                r = _chat(base, secrets_[name], headers={"Connection": "close"})
                results[name].append((r.status_code, r.status_code == 200 or
                                      r.json()["error"]["code"]))
                if r.status_code == 429 and r.json()["error"]["code"] == "usd_per_day":
                    return
                time.sleep(0.01)

        threads = [threading.Thread(target=client, args=(n, 10))
                   for n in ("budget", "rpm") for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        time.sleep(0.5)  # the workers' logs flush every 0.2 s
    rpm = [c for _, c in results["rpm"]]
    assert rpm.count(True) == 6 and set(rpm) == {True, "requests_per_minute"}
    budget_codes = [c for _, c in results["budget"]]
    assert "usd_per_day" in budget_codes
    assert set(budget_codes) <= {True, "usd_per_day", "max_concurrent"}
    rows = [r for r in DecisionLog(tmp_path / "log").read() if r["client"] == "budget"]
    assert len(rows) == budget_codes.count(True) == 4  # never past the budget
    assert all(r["cost_usd"] == pytest.approx(cost) for r in rows)
    assert len([r for r in DecisionLog(tmp_path / "log").read() if r["client"] == "rpm"]) == 6


def test_sqlite_store_holds_across_two_worker_processes(tmp_path):
    _check_across_workers(tmp_path, f"sqlite:///{tmp_path / 'quota.sqlite'}")


def test_redis_store_holds_across_two_worker_processes(tmp_path, redis_url):
    _check_across_workers(tmp_path, redis_url)
