"""The counters behind client keys: spend per UTC day and month, requests per minute and
requests in flight, in one store that every worker process shares.

A store has three calls: ``admit(key) -> Admission`` (checks the key's budgets, its rate and
its concurrency, and when all pass counts the request and takes a slot, in one atomic step, so
two workers cannot both pass the last unit), ``spend(name, usd)`` (adds a finished request's
cost) and ``release(admission)`` (frees the slot); ``settle(admission, usd)`` does the last
two at once. :func:`open_store` opens one from a URL:

- ``sqlite:///path`` (relative) or ``sqlite:////abs/path``: a SQLite file, for the workers of
  one machine (each ``admit`` is one ``BEGIN IMMEDIATE`` transaction).
- ``redis://host:port/db``: a Redis server, for several machines (``admit`` and ``settle``
  are one Lua script each, atomic on the server). Needs the ``redis`` package.

Rules: a request is admitted while the key's spend is below its budget (the cost of a request
is known only when it has finished, so requests in flight when the budget is reached can pass
it by at most ``max_concurrent`` requests' costs); at most ``requests_per_minute`` requests per
UTC clock minute (a fixed window: a burst can straddle two minutes); at most
``max_concurrent`` in flight. A slot whose worker died is freed after ``LEASE_SECONDS``.
"""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from router_ml.errors import ServingError

LEASE_SECONDS = 900  # longer than any request: the 600 s timeout cap plus fallbacks' slack


@dataclass(frozen=True)
class Admission:
    """The store's answer for one request. ok: admitted; else ``reason`` is the limit hit
    (``usd_per_day``, ``usd_per_month``, ``requests_per_minute`` or ``max_concurrent``),
    ``message`` says so for the client and ``retry_after`` is seconds until it may pass.
    lease: the slot an admitted request holds until :meth:`release`."""

    ok: bool
    reason: str = ""
    message: str = ""
    retry_after: int = 0
    lease: str | None = None
    client: str = ""


def _periods(now: float) -> tuple[str, str, int]:
    t = dt.datetime.fromtimestamp(now, dt.timezone.utc)
    return t.strftime("%Y%m%d"), t.strftime("%Y%m"), int(now // 60)


def _until_next(now: float, what: str) -> int:
    """Whole seconds (at least 1) from ``now`` to the next UTC day, month or minute."""
    t = dt.datetime.fromtimestamp(now, dt.timezone.utc)
    if what == "minute":
        nxt = (int(now // 60) + 1) * 60.0
    elif what == "day":
        nxt = (t.replace(hour=0, minute=0, second=0, microsecond=0)
               + dt.timedelta(days=1)).timestamp()
    else:
        first = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        nxt = (first.replace(year=first.year + 1, month=1) if first.month == 12
               else first.replace(month=first.month + 1)).timestamp()
    return max(1, math.ceil(nxt - now))


def _denied(key, reason: str, value: float, now: float) -> Admission:
    if reason == "usd_per_day":
        msg = (f"key {key.name!r} has spent ${value:.6g} of its ${key.usd_per_day:g} budget for "
               "this UTC day")
        wait = _until_next(now, "day")
    elif reason == "usd_per_month":
        msg = (f"key {key.name!r} has spent ${value:.6g} of its ${key.usd_per_month:g} budget "
               "for this UTC month")
        wait = _until_next(now, "month")
    elif reason == "requests_per_minute":
        msg = (f"key {key.name!r} has made {int(value)} requests this minute, its limit of "
               f"{key.requests_per_minute} per minute")
        wait = _until_next(now, "minute")
    else:
        msg = (f"key {key.name!r} has {int(value)} requests in flight, its limit of "
               f"{key.max_concurrent} at once")
        wait = 1
    return Admission(False, reason, f"{msg}; retry after {wait} s", wait, client=key.name)


class _Settling:
    """What both stores do with a finished request: add its cost to the key's spend and free
    its slot, in one transaction of the store (``_settle``)."""

    def spend(self, client: str, usd: float, now: float | None = None) -> None:
        self._settle(client, usd, None, now)

    def release(self, admission: Admission) -> None:
        self._settle(admission.client, 0.0, admission.lease, None)

    def settle(self, admission: Admission, usd: float, now: float | None = None) -> None:
        """:meth:`spend` and :meth:`release` at once."""
        self._settle(admission.client, usd, admission.lease, now)


class SQLiteQuota(_Settling):
    """Counters in a SQLite file (WAL) that the processes of one machine share. Its calls are
    short local transactions (tens of microseconds), so the gate makes them on the event loop
    (``inline``): a hop to a worker thread would cost more than the call."""

    inline = True

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._swept: dict[str, int] = {}  # client -> the minute whose older counts are gone
        self._con = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                    check_same_thread=False)
        with self._lock:
            self._con.execute("PRAGMA busy_timeout=30000")
            for _ in range(600):  # changing the journal mode skips the busy handler
                try:
                    self._con.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e):
                        raise
                    time.sleep(0.05)
            self._con.execute("PRAGMA synchronous=NORMAL")
            self._con.executescript(
                "CREATE TABLE IF NOT EXISTS quota (client TEXT NOT NULL, period TEXT NOT NULL,"
                " value REAL NOT NULL, PRIMARY KEY (client, period));"
                "CREATE TABLE IF NOT EXISTS leases (lease TEXT PRIMARY KEY, client TEXT NOT NULL,"
                " expires REAL NOT NULL);"
                "CREATE INDEX IF NOT EXISTS leases_client ON leases (client);")

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def _value(self, client: str, period: str) -> float:
        row = self._con.execute("SELECT value FROM quota WHERE client = ? AND period = ?",
                                (client, period)).fetchone()
        return row[0] if row else 0.0

    def admit(self, key, now: float | None = None) -> Admission:
        now = time.time() if now is None else now
        day, month, minute = _periods(now)
        c = self._con
        with self._lock:
            c.execute("BEGIN IMMEDIATE")
            try:
                denied = None
                if key.usd_per_day is not None:
                    v = self._value(key.name, f"d:{day}")
                    if v >= key.usd_per_day:
                        denied = ("usd_per_day", v)
                if denied is None and key.usd_per_month is not None:
                    v = self._value(key.name, f"m:{month}")
                    if v >= key.usd_per_month:
                        denied = ("usd_per_month", v)
                if denied is None and key.requests_per_minute is not None:
                    v = self._value(key.name, f"r:{minute}")
                    if v >= key.requests_per_minute:
                        denied = ("requests_per_minute", v)
                if denied is None:
                    c.execute("DELETE FROM leases WHERE client = ? AND expires < ?",
                              (key.name, now))
                    v = c.execute("SELECT COUNT(*) FROM leases WHERE client = ?",
                                  (key.name,)).fetchone()[0]
                    if v >= key.max_concurrent:
                        denied = ("max_concurrent", v)
                if denied is not None:
                    c.execute("ROLLBACK")
                    return _denied(key, *denied, now)
                if key.requests_per_minute is not None:
                    if self._swept.get(key.name) != minute:
                        c.execute("DELETE FROM quota WHERE client = ? AND period LIKE 'r:%' "
                                  "AND period != ?", (key.name, f"r:{minute}"))
                        self._swept[key.name] = minute
                    c.execute("INSERT INTO quota VALUES (?, ?, 1) ON CONFLICT (client, period) "
                              "DO UPDATE SET value = value + 1", (key.name, f"r:{minute}"))
                lease = uuid.uuid4().hex
                c.execute("INSERT INTO leases VALUES (?, ?, ?)",
                          (lease, key.name, now + LEASE_SECONDS))
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
        return Admission(True, lease=lease, client=key.name)

    def _settle(self, client: str, usd: float, lease: str | None, now: float | None) -> None:
        if not usd and lease is None:
            return
        day, month, _ = _periods(time.time() if now is None else now)
        c = self._con
        with self._lock:
            c.execute("BEGIN IMMEDIATE")
            try:
                if usd:
                    c.executemany(
                        "INSERT INTO quota VALUES (?, ?, ?) ON CONFLICT (client, period) "
                        "DO UPDATE SET value = value + excluded.value",
                        [(client, f"d:{day}", float(usd)), (client, f"m:{month}", float(usd))])
                if lease is not None:
                    c.execute("DELETE FROM leases WHERE lease = ?", (lease,))
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise

    def spent(self, client: str, now: float | None = None) -> tuple[float, float]:
        """(USD this UTC day, USD this UTC month) of ``client``."""
        day, month, _ = _periods(time.time() if now is None else now)
        with self._lock:
            return self._value(client, f"d:{day}"), self._value(client, f"m:{month}")

    def close(self) -> None:
        with self._lock:
            self._con.close()


# KEYS: day spend, month spend, minute count, leases (a sorted set scored by expiry).
# ARGV: day budget, month budget, requests per minute (-1: none), max concurrent, now, lease.
_ADMIT = """
local now = tonumber(ARGV[5])
local day, month, rpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if day >= 0 then
  local v = tonumber(redis.call('GET', KEYS[1]) or '0')
  if v >= day then return {'usd_per_day', tostring(v)} end
end
if month >= 0 then
  local v = tonumber(redis.call('GET', KEYS[2]) or '0')
  if v >= month then return {'usd_per_month', tostring(v)} end
end
if rpm >= 0 then
  local v = tonumber(redis.call('GET', KEYS[3]) or '0')
  if v >= rpm then return {'requests_per_minute', tostring(v)} end
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
local n = redis.call('ZCARD', KEYS[4])
if n >= tonumber(ARGV[4]) then return {'max_concurrent', tostring(n)} end
if rpm >= 0 then
  redis.call('INCR', KEYS[3])
  redis.call('EXPIRE', KEYS[3], 120)
end
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[7]), ARGV[6])
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[7]))
return {'', ''}
"""


# KEYS: day spend, month spend, leases. ARGV: USD spent (a float's repr), the lease ('' none).
_SETTLE = """
if tonumber(ARGV[1]) ~= 0 then
  redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[1], 172800)
  redis.call('INCRBYFLOAT', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], 3456000)
end
if ARGV[2] ~= '' then redis.call('ZREM', KEYS[3], ARGV[2]) end
return 1
"""


class RedisQuota(_Settling):
    """Counters in Redis, for workers on several machines. Keys ``<prefix>:<client>:...``;
    a day's spend expires after 2 days, a month's after 40, a minute's count after 2
    minutes. Its calls go over the network: the gate awaits :meth:`aadmit` and
    :meth:`asettle` (``redis.asyncio``, one client per event loop), so no thread waits."""

    inline = False

    def __init__(self, url: str, prefix: str = "router_ml:quota"):
        try:
            import redis
        except ImportError:
            raise ServingError("a redis:// quota store needs the redis package: "
                               "pip install redis") from None
        self.url, self.prefix = url, prefix
        self._r = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            self._r.ping()
        except redis.RedisError as e:
            raise ServingError(f"quota store {url}: cannot reach Redis ({e})") from None
        self._admit = self._r.register_script(_ADMIT)
        self._settle_script = self._r.register_script(_SETTLE)
        self._async = None  # (event loop, admit script, settle script) of redis.asyncio

    def _keys(self, client: str, now: float) -> list[str]:
        day, month, minute = _periods(now)
        k = f"{self.prefix}:{client}"
        return [f"{k}:d:{day}", f"{k}:m:{month}", f"{k}:r:{minute}", f"{k}:inflight"]

    def _admit_args(self, key, now: float, lease: str) -> dict:
        def limit(v):
            return -1 if v is None else v

        return {"keys": self._keys(key.name, now), "args": [
            limit(key.usd_per_day), limit(key.usd_per_month), limit(key.requests_per_minute),
            key.max_concurrent, now, lease, LEASE_SECONDS]}

    @staticmethod
    def _admission(key, reply, now: float, lease: str) -> Admission:
        reason, value = reply
        reason = reason.decode() if isinstance(reason, bytes) else reason
        if reason:
            return _denied(key, reason, float(value), now)
        return Admission(True, lease=lease, client=key.name)

    def admit(self, key, now: float | None = None) -> Admission:
        now = time.time() if now is None else now
        lease = uuid.uuid4().hex
        return self._admission(key, self._admit(**self._admit_args(key, now, lease)), now, lease)

    def _settle_args(self, client: str, usd: float, lease: str | None, now: float | None):
        d, m, _, inflight = self._keys(client, time.time() if now is None else now)
        return {"keys": [d, m, inflight], "args": [repr(float(usd)), lease or ""]}

    def _settle(self, client: str, usd: float, lease: str | None, now: float | None) -> None:
        if not usd and lease is None:
            return
        self._settle_script(**self._settle_args(client, usd, lease, now))

    def _scripts(self):
        """This event loop's admit and settle scripts on a redis.asyncio client (a client
        belongs to the loop it was made on: each worker process has its own)."""
        import asyncio

        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            import redis.asyncio

            r = redis.asyncio.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)
            self._async = (loop, r.register_script(_ADMIT), r.register_script(_SETTLE))
        return self._async[1], self._async[2]

    async def aadmit(self, key, now: float | None = None) -> Admission:
        """:meth:`admit` without blocking the event loop."""
        admit, _ = self._scripts()
        now = time.time() if now is None else now
        lease = uuid.uuid4().hex
        return self._admission(key, await admit(**self._admit_args(key, now, lease)), now, lease)

    async def asettle(self, admission: Admission, usd: float, now: float | None = None) -> None:
        """:meth:`settle` without blocking the event loop."""
        if not usd and admission.lease is None:
            return
        _, settle = self._scripts()
        await settle(**self._settle_args(admission.client, usd, admission.lease, now))

    def spent(self, client: str, now: float | None = None) -> tuple[float, float]:
        d, m, _, _ = self._keys(client, time.time() if now is None else now)
        return tuple(float(v or 0) for v in self._r.mget(d, m))

    def close(self) -> None:
        self._r.close()


def open_store(url: str):
    """A store from its URL: ``sqlite:///relative/path``, ``sqlite:////absolute/path`` or
    ``redis://host:port/db`` (``rediss://`` for TLS)."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not path:
            raise ServingError(f"quota store {url!r}: give a file, e.g. sqlite:///quota.sqlite")
        return SQLiteQuota(path)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisQuota(url)
    raise ServingError(f"quota store {url!r}: use sqlite:///PATH (one machine) or "
                       "redis://HOST:PORT/DB (several)")


__all__ = ["Admission", "LEASE_SECONDS", "RedisQuota", "SQLiteQuota", "open_store"]
