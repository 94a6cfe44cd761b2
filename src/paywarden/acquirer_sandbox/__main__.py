"""Serve a sandbox acquirer:

    python -m paywarden.acquirer_sandbox --name sandbox_a --port 8431 --host 127.0.0.1 \\
        --db PATH --token-file PATH [--public-url URL]

Without ``--db`` the ledger lives in memory. The token file holds the bearer token
the gateway must present. ``--public-url`` (default ``http://HOST:PORT``) prefixes
the 3-D Secure page URLs handed to customers.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from paywarden.acquirer_sandbox.app import create_app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m paywarden.acquirer_sandbox", description="Paywarden sandbox acquirer"
    )
    parser.add_argument("--name", required=True, help="acquirer name, e.g. sandbox_a")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8431)
    parser.add_argument("--db", default=None, help="SQLite file (default: in memory)")
    parser.add_argument("--token-file", required=True, help="file holding the bearer token")
    parser.add_argument("--public-url", default=None, help="base URL customers reach")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    try:
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        parser.error(f"cannot read --token-file: {exc.strerror}")
    if not token:
        parser.error("--token-file is empty")
    public_url = args.public_url or f"http://{args.host}:{args.port}"
    app = create_app(name=args.name, db_path=args.db, token=token, public_url=public_url)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
