"""Every place leadscore reads Faust's private state, in one module.

Written against faust-streaming 0.15.x (pinned in pyproject.toml). It replaces nothing yet; it
reads the consumer's committed offsets, which Faust keeps but does not expose, to report
consumer lag per partition without a round trip to the broker.
"""

from typing import Any


def committed_offset(app: Any, tp: Any) -> int | None:
    """The offset Faust last committed for a partition (the next record to read), if any."""
    value = app.consumer._committed_offset.get(tp)
    return None if value is None else int(value)


def highwater(app: Any, tp: Any) -> int | None:
    """The partition's end offset as last seen by the consumer's fetcher, if known."""
    try:
        value = app.consumer.highwater(tp)
    except (AssertionError, KeyError, AttributeError):  # not fetched from yet
        return None
    return None if value is None else int(value)
