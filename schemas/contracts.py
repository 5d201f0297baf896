"""Access to the packaged JSON Schema contracts of the leadscore topics.

The schemas (``*.schema.json``, draft 2020-12) and ``asyncapi.yaml`` ship as package data next
to this module. They are documentation and test fixtures for producers and consumers in any
language; this module deliberately does not validate anything (``jsonschema`` is a dev-only
dependency).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

__all__ = ["SCHEMA_DIR", "SCHEMA_SUFFIX", "TOPIC_SCHEMAS", "load_schema", "schema_names"]

SCHEMA_DIR: Final[Path] = Path(__file__).resolve().parent
"""Directory holding the ``*.schema.json`` files and ``asyncapi.yaml``."""

SCHEMA_SUFFIX: Final = ".schema.json"

TOPIC_SCHEMAS: Final[Mapping[str, str]] = MappingProxyType(
    {
        # Inbound (consumed by the service).
        "web-visits": "web_visit",
        "email-events": "email_event",
        "content-downloads": "content_download",
        "webinar-events": "webinar_event",
        "lead-profiles": "lead_profile",
        "sales-feedback": "sales_feedback",
        "lead-erasures": "erasure",
        # Outbound (produced by the service).
        "mql-handoff": "mql_event",
        "lead-nurture": "nurture_event",
        "lead-dead-letters": "dead_letter",
        # Internal to the service.
        "lead-ticks": "tick",
        # Identities: from the collector and from the service itself, read by the service.
        "lead-identities": "lead_identity",
    }
)
"""Default topic name -> schema name (file ``<name>.schema.json``)."""

_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _stem(name: str) -> str:
    stem = name.removesuffix(SCHEMA_SUFFIX)
    if _NAME.fullmatch(stem) is None:
        raise ValueError(f"invalid schema name: {name!r}")
    return stem


def load_schema(name: str) -> dict[str, Any]:
    """Return the parsed schema ``name`` (``"web_visit"`` or ``"web_visit.schema.json"``).

    Raises ``ValueError`` for a malformed name and ``FileNotFoundError`` for an unknown one.
    """
    resource = resources.files(__package__ or "schemas").joinpath(_stem(name) + SCHEMA_SUFFIX)
    if not resource.is_file():
        raise FileNotFoundError(f"no such schema: {name!r}")
    data = json.loads(resource.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"schema {name!r} is not a JSON object")
    return data


def schema_names() -> list[str]:
    """Names of all packaged schemas (including ``common``), sorted."""
    root = resources.files(__package__ or "schemas")
    return sorted(
        entry.name.removesuffix(SCHEMA_SUFFIX)
        for entry in root.iterdir()
        if entry.is_file() and entry.name.endswith(SCHEMA_SUFFIX)
    )
