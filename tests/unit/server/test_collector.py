"""The garbage collector's settings for serving (server/collector.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from server.collector import YOUNG_COLLECTION_THRESHOLD, settle_for_serving


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_serving_freezes_what_start_up_built_and_collects_the_young_less_often() -> None:
    older = gc.get_threshold()[1:]
    built_at_start_up = [object()]
    assert gc.is_tracked(built_at_start_up)
    settle_for_serving()
    assert gc.get_freeze_count() > 0
    assert not any(built_at_start_up is tracked for tracked in gc.get_objects())  # frozen: never walked again
    assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *older)
