"""Processes and threads tests start on 127.0.0.1, always stopped (whole process group)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def child_env() -> dict:
    """Environment for a child Python process: this checkout's router_ml first on the path and
    the running interpreter's scripts (uvicorn, mlflow) on PATH."""
    import sys

    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path,
            "PATH": os.pathsep.join((str(Path(sys.executable).parent), os.environ["PATH"]))}


def free_port() -> int:
    """A port that was free a moment ago, for a child process that binds it itself (servers
    in this process get a socket that stays bound: :func:`uvicorn_thread`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen | None, log: Path | None, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{proc.args[:4]} exited with {proc.returncode}:\n"
                        + (log.read_text()[-3000:] if log else ""))
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{url} not answering after {timeout} s:\n"
                        + (log.read_text()[-3000:] if log else ""))
        time.sleep(0.3)


@contextlib.contextmanager
def process(cmd: list[str], health_url: str, log: Path, env=None, cwd=None, timeout=90):
    """Run ``cmd`` in its own session until ``health_url`` answers 200; stop it on exit."""
    out = log.open("wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
    try:
        wait_http(health_url, proc, log, timeout)
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        out.close()


@contextlib.contextmanager
def uvicorn_thread(app, port: int | None = None):
    """Serve an ASGI app with uvicorn in a thread on 127.0.0.1; yields its base URL. The
    socket is bound here (to ``port``, else one the OS picks) and handed to uvicorn still
    bound, so no other process can take the port in between."""
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port or 0))
    port = sock.getsockname()[1]
    # the app's lifespan runs, as under ``router-ml serve``
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not t.is_alive():
            pytest.fail("uvicorn test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(timeout=10)
        sock.close()


def upstream_stub():
    """The operator's upstream. Answers 'ok from <model>'. Markers in the last message:
    [echo401:M] a 401 whose text echoes the Authorization header (as some providers do);
    [leak500:M] a 500 with an internal service's reply; [bad400:M] a 400 (the request's
    fault); [slow:M] answers after 2.5 s; [huge:M] a 3 MB answer; [empty:M] an empty answer
    (also as a stream)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    seen = []

    async def chat(request):
        body = await request.json()
        seen.append({"body": body, "headers": dict(request.headers), "path": request.url.path})
        model, text = body["model"], body["messages"][-1]["content"]
        if f"[echo401:{model}]" in text:
            return JSONResponse({"error": {"message": "Incorrect API key provided: "
                                           + request.headers.get("authorization", "")}},
                                status_code=401)
        if f"[leak500:{model}]" in text:
            return JSONResponse({"error": {"message": "INTERNAL-REPLY ami-id i-0abc"}},
                                status_code=500)
        if f"[bad400:{model}]" in text:
            return JSONResponse({"error": {"message": "bad request"}}, status_code=400)
        if f"[slow:{model}]" in text:
            await asyncio.sleep(2.5)
        answer = "" if f"[empty:{model}]" in text else f"ok from {model}"
        if f"[huge:{model}]" in text:
            answer = "x" * 3_000_000
        base = {"id": "c1", "created": 1, "model": model}
        if body.get("stream"):
            async def gen():
                chunk = {**base, "object": "chat.completion.chunk", "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": answer},
                     "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n"
                end = {**base, "object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                yield f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n"
            return StreamingResponse(gen(), media_type="text/event-stream")
        return JSONResponse({**base, "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": answer},
             "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])]), seen
