"""The audit store on PostgreSQL: concurrent appenders with separate engines."""

from __future__ import annotations

import threading

import pytest

from paywarden.audit.log import AuditLog
from paywarden.audit.store import AuditStore
from paywarden.audit.verify import verify_store
from tests.audit.conftest import spec
from tests.conftest import pg_schema

pytestmark = pytest.mark.pg


def test_concurrent_appenders_with_separate_engines_get_dense_seqs() -> None:
    with pg_schema() as url:
        AuditStore(url).dispose()  # migrate once
        logs = [
            AuditLog(AuditStore(url, migrate=False), service="gateway", sign_interval=None)
            for _ in range(3)
        ]
        got: list[int] = []
        lock = threading.Lock()

        def work(log: AuditLog, base: int) -> None:
            for i in range(60):
                seq = log.record(**spec(base + i))
                with lock:
                    got.append(seq)

        threads = [
            threading.Thread(target=work, args=(log, n * 1000))
            for n, log in enumerate(logs)
            for _ in range(4)
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for log in logs:
            log.catch_up()  # several processes' maintainers race: still one tree
        for log in logs:
            log.close()
        store = AuditStore(url, migrate=False)
        try:
            size = 3 * 2 + 12 * 60  # started/stopped per log + the records
            report = verify_store(store, service="gateway")
            assert report.ok, report.findings
            assert report.entries_checked == size
            assert sorted(got) == sorted(set(got))
            assert len(got) == 12 * 60
        finally:
            store.dispose()
