"""Real servers for tests: an ASGI app under uvicorn on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

STARTUP_TIMEOUT = 30.0  # a uvicorn thread starting on a loaded machine
SHUTDOWN_TIMEOUT = 5.0


@contextmanager
def run_app_in_thread(
    app: Any,
    *,
    config: Callable[[Any], uvicorn.Config] | None = None,
    scheme: str = "http",
    port: int = 0,
) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) in a daemon thread.

    Yields the base URL (``http://127.0.0.1:PORT``) once the server accepts
    requests; on exit asks uvicorn to stop and waits for the thread (forcing the
    exit if in-flight requests linger). The socket is bound here, before the
    thread starts, so there is no race for the port. ``config`` builds a custom
    uvicorn config (the vault's mutual-TLS one); then the URL uses ``scheme``.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    if config is not None:
        cfg = config(app)
    else:
        cfg = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="auto",
            loop="auto",  # uvloop when installed: asyncio's loop adds ~40 ms per response here
            timeout_graceful_shutdown=1,
        )
    server = uvicorn.Server(cfg)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)

    thread = threading.Thread(target=serve, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not server.started:
            if errors or not thread.is_alive():
                raise RuntimeError(f"server failed to start: {errors!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in time")
            time.sleep(0.01)
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(SHUTDOWN_TIMEOUT)
        if thread.is_alive():
            server.force_exit = True
            thread.join(SHUTDOWN_TIMEOUT)
        sock.close()
