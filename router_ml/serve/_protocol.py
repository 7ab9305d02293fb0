"""uvicorn's HTTP/1.1 protocol with a deadline for a request's headers.

uvicorn bounds the idle time between requests on a kept-alive connection, but not the time a
client takes to send a request line and headers: a client that opens connections and sends
half a header would hold them for ever. :class:`HeaderTimeoutH11` closes a connection whose
headers have not all arrived ``seconds`` after it opened, or after its next request began.
It lives at module level so that ``serve --workers N`` can name it as an import string.
"""

from __future__ import annotations

from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderTimeoutH11(H11Protocol):
    seconds: float = 10.0  # set by router_ml.serve.endpoint for its process

    def connection_made(self, transport):
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(self.seconds, self._headers_late)

    def data_received(self, data):
        before = self.cycle
        if self._header_timer is None and (before is None or before.response_complete):
            self._header_timer = self.loop.call_later(self.seconds, self._headers_late)
        super().data_received(data)
        if self.cycle is not before and self._header_timer is not None:
            self._header_timer.cancel()  # the headers are in: the request has begun
            self._header_timer = None

    def _headers_late(self):
        self._header_timer = None
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc):
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)


__all__ = ["HeaderTimeoutH11"]
