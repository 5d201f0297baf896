"""The Faust agents: thin wrappers that decode, call the scoring core, write the table and send."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.app import Service


def register_agents(service: "Service") -> None:
    """Register every agent, timer and table callback on the service's app."""
    from agents.decay import register_decay
    from agents.identity import register_identity
    from agents.scoring import register_scoring

    register_scoring(service)
    register_decay(service)
    register_identity(service)
