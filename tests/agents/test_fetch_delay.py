"""``leadscore_fetch_delay_seconds``: how old a batch's newest record is when its scoring starts
(agents/batch.py), the part of the end-to-end latency spent before the worker."""

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
    settings = Settings(store="memory://", data_dir=tmp_path, app_id=f"delay-{uuid.uuid4().hex[:8]}")
    monkeypatch.setattr(output, "send_keyed", AsyncMock())
    monkeypatch.setattr(output, "confirm_membership", AsyncMock())
    monkeypatch.setattr(faust_internals, "send_changelog", AsyncMock(return_value=0))
    return create_app(settings)


def observed(service: Service, le: str) -> float:
    value = service.metrics.registry.get_sample_value("leadscore_fetch_delay_seconds_bucket", {"le": le})
    return 0.0 if value is None else value


async def test_a_batch_observes_the_age_of_its_newest_record_once(service: Service) -> None:
    batches = visits(service, ["L1", "L2"], 0)
    for record in batches[0][1]:
        record.timestamp -= 3_000 if record.key == b"L1" else 2_000  # the newest is 2 s old
    await score_batches(service, batches, hold=False)
    assert (observed(service, "1.0"), observed(service, "2.5"), observed(service, "+Inf")) == (0.0, 1.0, 1.0)
