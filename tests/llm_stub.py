"""A local OpenAI-compatible chat server for tests: 127.0.0.1, a port of its own, scripted per
model name, bounded (a fixed number of requests, socket timeouts), stopped by the test.

    with StubLLM({"cheap": lambda msgs: "{}", "broken": Fail(500)}) as stub:
        LiteLLMClient(api_base=stub.url, api_key="test")("cheap", [{"role": "user", ...}])

A behaviour takes the request's messages and returns the answer text, a ``Fail(status)``
(that HTTP status with an OpenAI-style error body) or a ``Slow(seconds, text)``.
``stub.requests`` lists (model, messages) in arrival order.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Fail:
    status: int = 500


@dataclass(frozen=True)
class Slow:
    seconds: float
    text: str = "late"


class StubLLM:
    def __init__(self, behaviours: dict, *, max_requests: int = 500, default=None):
        self.behaviours = dict(behaviours)
        self.default = default
        self.max_requests = max_requests
        self.requests: list = []
        self._lock = threading.Lock()
        self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def _answer(self, model: str, messages: list):
        with self._lock:
            self.requests.append((model, messages))
            if len(self.requests) > self.max_requests:
                return Fail(429)
        fn = self.behaviours.get(model, self.default)
        if fn is None:
            return Fail(404)
        return fn(messages) if callable(fn) else fn

    def __enter__(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                out = stub._answer(body.get("model", ""), body.get("messages", []))
                if isinstance(out, Slow):
                    time.sleep(out.seconds)
                    out = out.text
                if isinstance(out, Fail):
                    status = out.status
                    data = {"error": {"message": f"stub error {status}", "type": "server_error"}}
                else:
                    status = 200
                    text = str(out)
                    data = {"id": "stub", "object": "chat.completion", "created": 0,
                            "model": body.get("model"),
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": text}}],
                            "usage": {"prompt_tokens": 4 * len(body.get("messages", [])) + 20,
                                      "completion_tokens": max(1, len(text) // 4),
                                      "total_tokens": 0}}
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                # headers and body in one write: separate small writes meet delayed ACKs
                self._headers_buffer.append(b"\r\n" + payload)
                self.flush_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        return False

    def models_called(self) -> list[str]:
        return [m for m, _ in self.requests]
