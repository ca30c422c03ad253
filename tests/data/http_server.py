"""Loopback HTTP servers for download tests: real servers on 127.0.0.1, never the internet."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STALL_SECONDS = 5.0  # how long the stalling server holds a connection; the client gives up first


class Mirror:
    """An HTTP server on 127.0.0.1 serving `files` (name → bytes) in one of several behaviours.

    "good" and "corrupt" serve the files whole ("corrupt" is given corrupted ones), "drop" closes the
    connection halfway, "stall" stops sending halfway, "missing" answers 404. `requests` lists the
    names asked for; `url` is the base URL (files are served under any folder, by their last name).
    """

    def __init__(self, files: dict[str, bytes], behaviour: str) -> None:
        self.requests: list[str] = []
        self.release = threading.Event()
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1]
                mirror.requests.append(name)
                if name not in files or behaviour == "missing":
                    self.send_error(404)
                    return
                body = files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if behaviour in ("drop", "stall"):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    if behaviour == "stall":
                        mirror.release.wait(STALL_SECONDS)
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/files/"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    """The URL of a port nothing listens on (connection refused: as good as offline)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/files/"
