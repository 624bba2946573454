"""A real HTTP server on 127.0.0.1 serving test images (feeds' image_link URLs, the fetcher's
limits): ``with image_server() as server: server.add("/a.png", data); server.url("/a.png")``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Route = Callable[[BaseHTTPRequestHandler], None]


class _Server(ThreadingHTTPServer):
    # socketserver's listen backlog of 5 drops the connections of a parallel fetcher (a SYN
    # retried a second later): a real image host has a deep one.
    request_queue_size = 128
    daemon_threads = True


class ImageServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                server.hits[path] = server.hits.get(path, 0) + 1
                route = server.routes.get(path)
                if route is None:
                    self.send_error(404)
                    return
                route(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def add(self, path: str, data: bytes, content_type: str = "image/png") -> str:
        def send(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)

        self.routes[path] = send
        return self.url(path)

    def redirect(self, path: str, location: str, code: int = 302) -> str:
        def send(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(code)
            handler.send_header("Location", location)
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        self.routes[path] = send
        return self.url(path)

    def trickle(self, path: str, data: bytes, pause: float) -> str:
        """Sends ``data`` a byte at a time, ``pause`` seconds apart, with no Content-Length."""

        def send(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "image/png")
            handler.end_headers()
            try:
                for i in range(len(data)):
                    handler.wfile.write(data[i : i + 1])
                    handler.wfile.flush()
                    time.sleep(pause)
            except OSError:
                pass  # the client gave up, as it should

        self.routes[path] = send
        return self.url(path)

    def stream(self, path: str, size: int, *, declare: bool) -> str:
        """``size`` bytes, with or without a Content-Length header."""

        def send(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "image/png")
            if declare:
                handler.send_header("Content-Length", str(size))
            handler.end_headers()
            try:
                left = size
                while left > 0:
                    n = min(left, 65536)
                    handler.wfile.write(b"\0" * n)
                    left -= n
            except OSError:
                pass

        self.routes[path] = send
        return self.url(path)


@contextmanager
def image_server() -> Iterator[ImageServer]:
    server = ImageServer()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
