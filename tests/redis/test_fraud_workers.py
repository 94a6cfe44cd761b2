"""Two gateway workers on one Redis enforce one velocity limit: a card-testing
run spread across both is blocked at the same attempt as on a single worker."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pytest

from paywarden.config import AcquirerConfig, Settings, load_or_create_secrets
from paywarden.core.secrets import Secret
from paywarden.gateway.app import create_app
from paywarden.gateway.container import build_gateway
from paywarden.migrations import upgrade
from tests.api.test_fraud_decisions import _card_pm, _cards, _pay
from tests.conftest import ACQUIRER_TOKEN, Acquirers, Api, VaultServer, make_merchant, redis_url
from tests.support.servers import run_app_in_thread

pytestmark = pytest.mark.redis


def test_two_workers_share_one_velocity_limit(
    tmp_path: Path, clean_acquirers: Acquirers, vault: VaultServer, prefix: str
) -> None:
    settings = Settings(
        home=tmp_path / "home",
        vault_url=vault.url,
        pki_dir=vault.pki_dir,
        redis_url=redis_url(),
        fraud_velocity_prefix=prefix,
        acquirers=[
            AcquirerConfig(name=n, url=u, priority=i)
            for i, (n, u) in enumerate(clean_acquirers.urls.items())
        ],
    )
    secrets = dataclasses.replace(
        load_or_create_secrets(settings.home),
        acquirer_token=Secret(ACQUIRER_TOKEN, "acquirer_token"),
    )
    upgrade(settings.resolved_database_url)
    workers = [build_gateway(settings, secrets), build_gateway(settings, secrets)]
    merchant = make_merchant(workers[0])
    try:
        with (
            run_app_in_thread(create_app(workers[0])) as url_a,
            run_app_in_thread(create_app(workers[1])) as url_b,
            httpx.Client(base_url=url_a, timeout=30) as a,
            httpx.Client(base_url=url_b, timeout=30) as b,
        ):
            apis = [Api(a, merchant.secret_key), Api(b, merchant.secret_key)]
            codes = []
            for i, number in enumerate(_cards(8, seed=11)):
                api = apis[i % 2]  # alternate: neither worker alone sees five cards
                pm = _card_pm(api, number)
                ctx = {"ip_address": "203.0.113.77"}
                codes.append(_pay(api, amount=100, payment_method=pm, paywarden_risk_context=ctx))
            assert [c.status_code for c in codes] == [200] * 4 + [402] * 4
    finally:
        for gw in workers:
            gw.close()
