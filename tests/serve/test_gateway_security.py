"""router_ml.serve as a hostile client meets it: nothing a request carries reaches a host, a key,
a header or a model the operator did not configure; every limit holds with a 4xx, never a 500;
the upstream's own text (which may echo the operator's key) never reaches the client or the log.

Two loopback servers: the upstream stub (the operator's; it records every request with its
headers, and misbehaves on markers in the last message) and an "attacker" that must never
receive anything."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("litellm")
httpx = pytest.importorskip("httpx")

from servers import free_port, upstream_stub, uvicorn_thread  # noqa: E402

KEY = "sk-operator-SECRET0123456789"
EASY = "say hello to my friend number 5"
WEAK, STRONG = "router:1", "router:0"  # a pair router's knob: 1 sends to weak, 0 to strong




def attacker_stub():
    """Records anything at all that reaches it."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    got = []

    async def anything(request):
        got.append((request.url.path, dict(request.headers)))
        return JSONResponse({"id": "x", "object": "chat.completion", "created": 0, "model": "x",
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": "stolen"}}]})

    return Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST"])]), got


@pytest.fixture(scope="module")
def stubs():
    up_app, seen = upstream_stub()
    bad_app, got = attacker_stub()
    with uvicorn_thread(up_app) as up, uvicorn_thread(bad_app) as bad:
        yield f"{up}/v1", seen, bad, got


@pytest.fixture(scope="module")
def gateway(make_router, stubs, tmp_path_factory):
    from router_ml.loop.decision_log import DecisionLog
    from router_ml.serve.endpoint import create_app

    url, seen, bad, got = stubs
    log_dir = tmp_path_factory.mktemp("gw") / "log"
    log = DecisionLog(log_dir)
    app = create_app(make_router("tfidf"), url, api_key=KEY, timeout=2, log=log,
                     breaker_failures=2, breaker_cooldown=60, max_body_bytes=1_000_000,
                     max_response_bytes=1_000_000, body_timeout=1.0)
    with uvicorn_thread(app) as base:
        yield base, app, log, log_dir
    app.state.close()


def _chat(base, text, model=WEAK, headers=None, **kw):
    return httpx.post(f"{base}/v1/chat/completions", timeout=30, headers=headers, json={
        "model": model, "messages": [{"role": "user", "content": text}], **kw})


def _log_text(log) -> str:
    log.flush()
    return json.dumps(log.read())


HOSTILE = {
    "base_url": "{bad}/v1", "api_base": "{bad}/latest/meta-data", "custom_llm_provider": "openai",
    "extra_headers": {"Authorization": "Bearer attacker"}, "mock_response": "forged answer",
    "deployment_id": "gpt-4-32k", "api_key": "sk-attacker", "model_list": [
        {"model_name": "x", "litellm_params": {"model": "openai/x", "api_base": "{bad}/v1"}}],
    "extra_body": {"api_base": "{bad}"}, "headers": {"x": "y"}, "api_version": "1",
    "organization": "org", "timeout": 0.001, "num_retries": 5, "client": "x",
}


@pytest.mark.parametrize("field", sorted(HOSTILE))
def test_a_field_outside_the_allow_list_is_refused_and_nothing_is_sent(gateway, stubs, field):
    base, *_ = gateway
    url, seen, bad, got = stubs
    value = json.loads(json.dumps(HOSTILE[field]).replace("{bad}", bad))
    n = len(seen)
    r = httpx.post(f"{base}/v1/chat/completions", timeout=30, json={
        "model": WEAK, "messages": [{"role": "user", "content": EASY}], field: value})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == field
    assert field in err["message"]
    assert got == [] and len(seen) == n  # neither the attacker nor the upstream saw anything


def test_what_is_forwarded_goes_to_the_operators_upstream_with_the_operators_key(gateway, stubs):
    base, *_ = gateway
    url, seen, _, got = stubs
    r = _chat(base, EASY, temperature=0.3, max_tokens=50, user="u1", seed=7,
              headers={"authorization": "Bearer client-token", "x-forwarded-host": "evil"})
    assert r.status_code == 200, r.text
    sent = seen[-1]
    assert sent["path"] == "/v1/chat/completions" and sent["body"]["model"] == "weak"
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    assert "x-forwarded-host" not in sent["headers"]
    assert {k: sent["body"][k] for k in ("temperature", "max_tokens", "seed")} == {
        "temperature": 0.3, "max_tokens": 50, "seed": 7}
    assert got == []


@pytest.mark.parametrize("kw, param", [
    ({"temperature": "hot"}, "temperature"), ({"n": 100}, "n"), ({"max_tokens": 10**7}, "max_tokens"),
    ({"stop": [1, 2]}, "stop"), ({"tools": "all"}, "tools"), ({"stream": "yes"}, "stream"),
    ({"messages": [{"role": "user", "content": "hi", "api_base": "x"}]}, "messages"),
    ({"messages": [{"role": "root", "content": "hi"}]}, "messages"), ({"messages": []}, "messages"),
])
def test_a_badly_typed_parameter_is_a_400_naming_it(gateway, kw, param):
    base, *_ = gateway
    body = {"model": WEAK, "messages": [{"role": "user", "content": EASY}], **kw}
    r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_the_upstream_key_and_error_text_never_reach_the_client_or_the_log(gateway):
    base, app, log, _ = gateway
    for marker, status in (("[echo401:weak]", 400), ("[leak500:weak] [leak500:strong]", 502)):
        r = _chat(base, f"{EASY} {marker}")
        assert r.status_code == status, r.text
        assert KEY not in r.text and "SECRET" not in r.text and "INTERNAL-REPLY" not in r.text
        assert r.headers["x-request-id"] in r.text
        assert KEY not in json.dumps(dict(r.headers))
    text = _log_text(log)
    assert KEY not in text and "SECRET" not in text and "INTERNAL-REPLY" not in text
    assert KEY not in httpx.get(f"{base}/metrics", timeout=10).text


def test_a_client_error_upstream_is_a_400_and_moves_no_circuit(gateway):
    base, app, *_ = gateway
    breaker = app.state.policy.breaker
    for _ in range(4):  # the breaker opens after 2 failures in a row
        r = _chat(base, f"{EASY} [bad400:weak]")
        assert r.status_code == 400 and "HTTP 400" in r.json()["error"]["message"]
    assert breaker.state("weak") == "closed"
    r = _chat(base, EASY)
    assert r.headers["x-router-model"] == "weak" and r.headers["x-router-reason"] == "learned"


def test_tiny_client_timeouts_are_refused_and_short_ones_open_no_circuit(gateway):
    base, app, *_ = gateway
    breaker = app.state.policy.breaker
    r = _chat(base, EASY, headers={"x-router-timeout": "0.001"})
    assert r.status_code == 400 and "timeout" in r.json()["error"]["message"]
    for _ in range(3):  # weak answers after 2.5 s; the client allows 1 s: fallback each time
        r = _chat(base, f"{EASY} [slow:weak]", headers={"x-router-timeout": "1"})
        assert r.status_code == 200 and r.headers["x-router-reason"] == "fallback"
    assert breaker.state("weak") == "closed"
    r = _chat(base, EASY)
    assert r.headers["x-router-model"] == "weak" and r.headers["x-router-reason"] == "learned"


def test_an_oversized_answer_is_a_502_and_the_model_keeps_its_circuit(gateway):
    base, app, *_ = gateway
    for _ in range(3):
        r = _chat(base, f"{EASY} [huge:weak] [huge:strong]")
        assert r.status_code == 502 and "too_large" in r.json()["error"]["message"]
    assert app.state.policy.breaker.state("weak") == "closed"
    assert app.state.policy.breaker.state("strong") == "closed"


@pytest.mark.parametrize("stream", [False, True])
def test_an_empty_answer_falls_back_before_the_first_byte(gateway, stream):
    base, *_ = gateway
    r = _chat(base, f"{EASY} [empty:weak]", stream=stream)
    assert r.status_code == 200, r.text
    assert r.headers["x-router-model"] == "strong" and r.headers["x-router-reason"] == "fallback"
    assert "ok from strong" in r.text


def test_deep_json_is_a_400_never_a_500(gateway):
    base, *_ = gateway
    deep = "[" * 60_000 + "]" * 60_000
    r = httpx.post(f"{base}/v1/chat/completions", content=deep, timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "deeper" in r.json()["error"]["message"]
    nested = {"model": WEAK, "messages": [{"role": "user", "content": "hi"}],
              "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}
    p = nested["tools"][0]["function"]["parameters"]
    for _ in range(40):
        p["x"] = {}
        p = p["x"]
    r = httpx.post(f"{base}/v1/chat/completions", json=nested, timeout=30)
    assert r.status_code == 400
    schema = {"type": "object"}
    for _ in range(300):
        schema = {"type": "object", "properties": {"a": schema}}
    r = _chat(base, EASY, response_format={"type": "json_schema",
                                           "json_schema": {"name": "s", "schema": schema}})
    assert r.status_code == 400 and r.json()["error"]["param"] in ("response_format", None)


def test_a_large_schema_is_refused(gateway):
    base, *_ = gateway
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(5000)}}
    r = _chat(base, EASY, response_format={"type": "json_schema",
                                           "json_schema": {"name": "s", "schema": schema}})
    assert r.status_code == 400 and "larger than" in r.json()["error"]["message"]


def _raw(port: int, data: bytes, wait: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def test_a_huge_body_is_refused_by_its_length_and_while_it_streams(gateway):
    base, *_ = gateway
    port = int(base.rsplit(":", 1)[1])
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n")
    out = _raw(port, head + b"content-length: 67108864\r\n\r\n" + b"{" * 1000)
    assert out.startswith(b"HTTP/1.1 413"), out[:200]
    # no length given: counted as it arrives (chunked), refused past the cap
    chunk = b"x" * 200_000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(8)) + b"0\r\n\r\n"
    out = _raw(port, head + b"transfer-encoding: chunked\r\n\r\n" + body)
    assert out.startswith(b"HTTP/1.1 413"), out[:200]


def test_a_slow_body_gets_a_408(gateway):
    base, *_ = gateway
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                  b"content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"mo")
        out = s.recv(65536)  # body_timeout is 1 s
    assert out.startswith(b"HTTP/1.1 408"), out[:200]


def test_half_sent_headers_are_closed_after_the_header_timeout():
    import uvicorn
    from starlette.applications import Starlette

    from router_ml.serve.endpoint import header_timeout_protocol

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(Starlette(), host="127.0.0.1", port=port,
                                           log_level="warning",
                                           http=header_timeout_protocol(0.5)))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.05)
    try:
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
        for i, s in enumerate(socks):
            if i % 2:
                s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n")  # never finished
        # each is closed by the server: recv returns b"" (or the peer resets it)
        for s in socks:
            try:
                assert s.recv(1024) == b""
            except ConnectionResetError:
                pass
            s.close()
        # a request that completes in time is served
        out = _raw(port, b"GET /nothing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 404")
    finally:
        server.should_exit = True
        t.join(timeout=10)


def test_log_files_are_private(gateway):
    base, app, log, log_dir = gateway
    assert _chat(base, EASY).status_code == 200
    log.flush()
    assert stat.S_IMODE(os.stat(log_dir).st_mode) == 0o700
    files = list(log_dir.glob("*.sqlite"))
    assert files and all(stat.S_IMODE(os.stat(f).st_mode) == 0o600 for f in files)


def test_the_report_skips_an_unreadable_day_file_and_names_it(tmp_path, caplog):
    from router_ml.loop.decision_log import DecisionLog
    from router_ml.loop.monitoring import format_report, report
    from router_ml.loop.policy import Policy
    from router_ml.loop.rules import parse_rules

    log = DecisionLog(tmp_path / "log")
    policy = Policy(None, parse_rules({"rules": [{"name": "all", "regex": ".", "model": "weak"}]}),
                    log=log)
    for _ in range(3):
        policy.run([{"role": "user", "content": "hi"}], lambda m, msgs: "fine")
    log.close()
    broken = tmp_path / "log" / "decisions-20200101.sqlite"
    broken.write_bytes(b"SQLite format 3\x00" + b"\x00" * 50)  # a truncated file
    rep = report(tmp_path / "log")
    assert rep["n"] == 3 and rep["skipped_files"] == [str(broken)]
    assert str(broken) in format_report(rep)


def test_a_yaml_rules_file_with_a_bad_tag_is_a_rule_config_error(tmp_path):
    from router_ml.loop.rules import RuleConfigError, load_rules

    f = tmp_path / "rules.yaml"
    f.write_text("ladder: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(RuleConfigError, match="rules.yaml: cannot parse"):
        load_rules(f)


def test_a_rules_file_naming_an_unknown_model_is_refused_at_start(make_router):
    from router_ml.loop.policy import Policy
    from router_ml.loop.rules import RuleConfigError, parse_rules

    router = make_router("tfidf")
    with pytest.raises(RuleConfigError, match=r"ladder: 'stornge'.*strong, weak"):
        Policy(router, parse_rules({"ladder": ["weak", "stornge"]}))
    declared = parse_rules({"ladder": ["weak", "strong", "bigger"], "models": {"bigger": {}}})
    assert Policy(router, declared).ladder == ("weak", "strong", "bigger")


def test_serve_refuses_a_port_in_use_before_it_says_it_listens(tmp_path, capsys, make_router):
    from router_ml.cli.serve import serve_main

    make_router("tfidf").save(tmp_path / "r")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rc = serve_main(["--model", str(tmp_path / "r"), "--upstream-base", "http://127.0.0.1:9/v1",
                         "--port", str(port)])
    out = capsys.readouterr()
    assert rc == 2 and "cannot listen" in out.err and "listening" not in out.out


def test_serve_refuses_a_limit_that_is_not_positive(tmp_path, capsys, make_router):
    from router_ml.cli.serve import serve_main

    make_router("tfidf").save(tmp_path / "r")
    rc = serve_main(["--model", str(tmp_path / "r"), "--upstream-base", "http://127.0.0.1:9/v1",
                     "--max-body-bytes", "0"])
    assert rc == 2 and "--max-body-bytes must be positive" in capsys.readouterr().err


# ---------------------------------------------------------------------- fuzzing the body
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                     | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)
_keys = st.sampled_from(["temperature", "top_p", "max_tokens", "n", "stop", "seed", "user",
                         "tools", "tool_choice", "response_format", "stream", "metadata",
                         "api_base", "base_url", "extra_headers", "mock_response", "model",
                         "messages", "logit_bias", "api_key"]) | st.text(max_size=12)


@hypothesis.settings(max_examples=150, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(extra=st.dictionaries(_keys, _json, max_size=5))
def test_fuzzed_bodies_never_give_a_500_and_never_reach_the_attacker(gateway, stubs, extra):
    base, *_ = gateway
    url, seen, bad, got = stubs
    body = {"model": WEAK, "messages": [{"role": "user", "content": EASY}], **extra}
    n = len(seen)
    r = httpx.post(f"{base}/v1/chat/completions", timeout=30,
                   content=json.dumps(body).replace("{bad}", bad))
    assert r.status_code in (200, 400, 502), r.text
    assert got == []
    from router_ml.serve._requests import FORWARDED

    for s in seen[n:]:  # what did reach the upstream was only allow-listed
        assert set(s["body"]) <= {*FORWARDED, "model", "messages", "stream"}
        assert s["headers"]["authorization"] == f"Bearer {KEY}"


def test_an_unknown_fields_name_is_said_back_only_in_part(gateway):
    base, *_ = gateway
    long = "x" * 100_000
    r = httpx.post(f"{base}/v1/chat/completions", timeout=30, json={
        "model": WEAK, "messages": [{"role": "user", "content": EASY, long: 1}], long: 1})
    assert r.status_code == 400 and len(r.content) < 2_000, r.content[:200]
