"""ASGI entry point for uvicorn workers.

``uvicorn --factory paywarden.gateway.asgi:app_factory``
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette

from paywarden.config import Settings, load_or_create_secrets
from paywarden.core.gctune import tune_for_service
from paywarden.gateway.app import create_app
from paywarden.gateway.container import build_gateway, with_background_workers


def app_factory() -> Starlette:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    secrets = load_or_create_secrets(settings.home)
    gw = with_background_workers(build_gateway(settings, secrets))
    app = create_app(gw, background=True)
    tune_for_service()
    return app
