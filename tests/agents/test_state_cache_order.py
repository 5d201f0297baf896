"""The state cache keeps the leads written most recently (streams/app.py ``Service.state_cache``,
agents/output.py ``record_states``): a lead written again moves to the end, and the bound drops
the leads written longest ago, not the whole cache."""

import uuid
from pathlib import Path
from unittest.mock import AsyncMock

import pytest

from agents import output
from agents.batch import score_batches
from streams import faust_internals
from streams.app import Service, create_app
from streams.settings import Settings
from tests.agents.test_write_behind import visits

pytestmark = pytest.mark.agents


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    settings = Settings(
        store="memory://", data_dir=tmp_path, app_id=f"cache-{uuid.uuid4().hex[:8]}", state_cache_per_partition=4
    )
    monkeypatch.setattr(output, "send_keyed", AsyncMock())
    monkeypatch.setattr(output, "confirm_membership", AsyncMock())
    monkeypatch.setattr(faust_internals, "send_changelog", AsyncMock(return_value=0))
    return create_app(settings)


async def test_a_lead_written_again_outlives_leads_written_after_it_once_in_the_cache(service: Service) -> None:
    await score_batches(service, visits(service, ["L1", "L2", "L3"], 0), hold=False)
    await score_batches(service, visits(service, ["L1"], 3), hold=False)  # L1 now the most recent
    await score_batches(service, visits(service, ["L4"], 4), hold=False)  # the bound (4) is reached
    await score_batches(service, visits(service, ["L5"], 5), hold=False)  # drops the oldest: L2
    assert list(service.caches[0]) == [b"L3", b"L1", b"L4", b"L5"]
