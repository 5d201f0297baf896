"""The ``leadscore`` command line."""

import asyncio
import sys
from pathlib import Path

import click

from scoring.errors import RulesError
from streams.local_kafka import kafka_cli
from streams.settings import SettingsError, settings_from_env


@click.group()
def main() -> None:
    """leadscore: real-time lead scoring on Apache Kafka."""


main.add_command(kafka_cli, name="kafka")


@main.command()
def worker() -> None:
    """Run a scoring worker (configured by LEADSCORE_* environment variables)."""
    import faust

    from streams.app import create_app
    from streams.topics import TopicLayoutError, ensure_topics

    try:
        settings = settings_from_env()
        service = create_app(settings)  # validates the rules file before touching Kafka
        asyncio.run(ensure_topics(settings))
    except (SettingsError, RulesError, TopicLayoutError) as exc:
        raise click.ClickException(str(exc)) from None
    from streams.logs import logging_config

    faust.Worker(
        service.app, loglevel=settings.log_level, logging_config=logging_config(settings.log_level)
    ).execute_from_commandline()


@main.command()
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def send(files: tuple[Path, ...]) -> None:
    """Send JSON-lines events to their topics (each line has a "type": web_visit, email_event, ...)."""
    from streams.sending import send_files

    try:
        counts = asyncio.run(send_files(settings_from_env(), files or (Path("/dev/stdin"),)))
    except (SettingsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    for topic, count in sorted(counts.items()):
        click.echo(f"{count:>8} events -> {topic}")


@main.command()
@click.argument("lead_id")
@click.option("--url", default=None, help="The worker's web address (default: LEADSCORE_WEB_HOST:PORT).")
def explain(lead_id: str, url: str | None) -> None:
    """Show a lead's score, stage and breakdown, from the worker that owns it."""
    from streams.explain import explain_lead

    settings = settings_from_env()
    base = url or f"http://{settings.web_host}:{settings.web_port}"
    code, text = explain_lead(base, lead_id)
    click.echo(text)
    sys.exit(code)


@main.command()
@click.option("--leads-per-minute", default=120, show_default=True, help="New lead journeys started per minute.")
@click.option("--speed", default=100000.0, show_default=True, help="How much faster than real time the demo runs.")
@click.option("--duration", default=0.0, help="Stop after this many seconds (0: run until Ctrl-C).")
def demo(leads_per_minute: int, speed: float, duration: float) -> None:
    """Start a local Kafka if none answers, a worker, and live demo traffic; print MQL and nurture events."""
    from streams.demo import run_demo

    sys.exit(run_demo(leads_per_minute=leads_per_minute, speed=speed, duration_s=duration))


@main.command(name="demo-traffic")
@click.option("--leads-per-minute", default=120, show_default=True)
@click.option("--duration", default=0.0, help="Stop after this many seconds (0: run forever).")
@click.option("--seed", default=None, type=int)
def demo_traffic(leads_per_minute: int, duration: float, seed: int | None) -> None:
    """Produce realistic lead journeys to the inbound topics.

    Journeys unfold on the service clock: set LEADSCORE_CLOCK_SPEED and LEADSCORE_CLOCK_EPOCH_MS to
    the worker's values, or they take real weeks."""
    from streams.demo_traffic import produce_traffic

    try:
        sent = asyncio.run(produce_traffic(settings_from_env(), leads_per_minute, duration, seed))
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        sent = -1
    if sent >= 0:
        click.echo(f"{sent} events sent")
