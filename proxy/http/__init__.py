"""The proxy's HTTP/1.1, sans-io: bytes in, events and bytes out, no sockets and no clock.

- `request.py` parses what the sandbox sends (httptools, strict) into requests and body
  chunks, with the limits the parser itself does not have;
- `connection.py` keeps one sandbox connection's order (pipelining, 100-continue,
  refusals) and says what to do next;
- `response.py` parses what the upstream answers;
- `messages.py` writes heads and frames bodies.

The I/O that drives them is proxy/transport.py; this package never imports asyncio.
"""
