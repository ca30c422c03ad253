"""Running the app: a listening socket (so that a busy port is a clear error, and port 0 picks a
free one), then uvicorn on it until Ctrl-C."""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

from dcnn.errors import DcnnError


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket listening on `host`:`port` (IPv4 or IPv6; port 0: any free port)."""
    if not 0 <= port <= 65535:
        raise DcnnError(f"--port {port}: give a port from 1 to 65535 (0: any free port).")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as err:
        raise DcnnError(f"cannot listen on {host}:{port}: {err.strerror or err}; choose another --host or "
                        "--port.") from None


def url_of(sock: socket.socket) -> str:
    """The http:// address a listening socket answers on."""
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def serve(app: FastAPI, sock: socket.socket) -> None:
    """Serve `app` on `sock` until interrupted (Ctrl-C, SIGTERM), finishing the requests in progress.

    After a graceful shutdown uvicorn raises the signal it caught again, so that Ctrl-C ends the
    command as an interrupted one (KeyboardInterrupt: exit status 130). Under asyncio's runner that
    second SIGINT can arrive after the main task has finished and be lost (the exit status was 0 in
    some runs), so a server stopped by a signal raises KeyboardInterrupt here if it was."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="info"))
    server.run(sockets=[sock])
    if server.should_exit:
        raise KeyboardInterrupt
