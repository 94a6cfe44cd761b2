"""The server processes' garbage-collector settings."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from paywarden.core.gctune import THRESHOLDS, tune_for_service


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_start_up_state_is_frozen_and_young_collections_are_rarer() -> None:
    survivor = [object() for _ in range(10)]  # start-up state
    assert tune_for_service() is True
    assert gc.get_threshold() == THRESHOLDS
    assert gc.get_freeze_count() > 0
    # Frozen: no generation holds it any more, so no collection walks it.
    assert gc.is_tracked(survivor)
    assert not any(o is survivor for o in gc.get_objects())


def test_defaults_can_be_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYWARDEN_GC_DEFAULTS", "1")
    before = gc.get_threshold()
    assert tune_for_service() is False
    assert gc.get_threshold() == before
