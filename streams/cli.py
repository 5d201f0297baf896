"""The ``leadscore`` command line."""

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from scoring.errors import RulesError
from streams.bench import bench_command
from streams.local_kafka import kafka_cli
from streams.settings import SettingsError, settings_from_env

if TYPE_CHECKING:
    from scoring.engine import InputRecord
    from scoring.rules import Rules


@click.group()
def main() -> None:
    """leadscore: real-time lead scoring on Apache Kafka."""


main.add_command(kafka_cli, name="kafka")
main.add_command(bench_command, name="bench")


@main.command()
def worker() -> None:
    """Run a scoring worker (configured by LEADSCORE_* environment variables)."""
    try:
        settings = settings_from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    from streams.huge_pages import execute_with_huge_pages

    execute_with_huge_pages(settings)  # before anything is opened: glibc reads its tunables at start

    import importlib.util

    import faust
    import mode.loop

    if importlib.util.find_spec("uvloop") is not None:
        mode.loop.use("uvloop")  # Faust's `-L uvloop`: about 20% more events/s (shared perf notes)

    from streams.app import create_app
    from streams.kafka_clients import KafkaAccessError
    from streams.topics import TopicLayoutError, ensure_topics

    try:
        service = create_app(settings)  # validates the rules file before touching Kafka
        asyncio.run(ensure_topics(settings))  # refused credentials stop here, within seconds
    except (SettingsError, RulesError, TopicLayoutError, KafkaAccessError) as exc:
        raise click.ClickException(str(exc)) from None
    from streams import gc_pauses
    from streams.logs import logging_config

    gc_pauses.time_pauses(service.metrics.gc_pauses)
    gc_pauses.configure(settings.gc_full_interval_s)
    faust.Worker(
        service.app, loglevel=settings.log_level, logging_config=logging_config(settings.log_level)
    ).execute_from_commandline()


@main.command()
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def send(files: tuple[Path, ...]) -> None:
    """Send JSON-lines events to their topics (each line has a "type": web_visit, email_event, ...).

    A web_visit with "anonymous_id" and no "lead_id" is an anonymous visit; an "identify" line
    ({"type": "identify", "anonymous_id", "lead_id"}) tells the worker that visitor is that lead."""
    from streams.kafka_clients import KafkaAccessError
    from streams.sending import send_files

    try:
        counts = asyncio.run(send_files(settings_from_env(), files or (Path("/dev/stdin"),)))
    except (SettingsError, ValueError, KafkaAccessError) as exc:
        raise click.ClickException(str(exc)) from None
    for topic, count in sorted(counts.items()):
        click.echo(f"{count:>8} events -> {topic}")


@main.command()
@click.argument("lead_id")
def erase(lead_id: str) -> None:
    """Erase a lead (GDPR): its state is deleted and its history up to now never counts again."""
    from streams.erasure import send_erasure
    from streams.kafka_clients import KafkaAccessError

    try:
        topic, partition, offset = asyncio.run(send_erasure(settings_from_env(), lead_id))
    except (SettingsError, ValueError, KafkaAccessError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"erasure of {lead_id} requested -> {topic} (partition {partition}, offset {offset})")


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
def collect() -> None:
    """Run the collector: pixel, events API and webhooks in front of Kafka (LEADSCORE_COLLECTOR_*)."""
    import logging.config

    from collector.app import run_collector
    from streams.kafka_clients import KafkaAccessError
    from streams.logs import logging_config

    try:
        settings = settings_from_env()
        logging.config.dictConfig(logging_config(settings.log_level))
        run_collector(settings)  # refused credentials stop it here, as the worker's
    except (SettingsError, ValueError, KafkaAccessError) as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("lead_id")
def token(lead_id: str) -> None:
    """Print the signed lead token of LEAD_ID (the pixel's ``lt``), with LEADSCORE_COLLECTOR_TOKEN_SECRET."""
    from collector.tokens import sign_lead_token

    try:
        click.echo(sign_lead_token(lead_id, settings_from_env().collector.token_secret))
    except (SettingsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


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
    from streams.kafka_clients import KafkaAccessError

    try:
        sent = asyncio.run(produce_traffic(settings_from_env(), leads_per_minute, duration, seed))
    except (SettingsError, KafkaAccessError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        sent = -1
    if sent >= 0:
        click.echo(f"{sent} events sent")


def _rules_or_fail(path: Path) -> "Rules":
    from streams.replay import load_rules

    try:
        return load_rules(path)
    except (RulesError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


def _history(files: tuple[Path, ...]) -> "list[InputRecord]":
    from streams.history import read_jsonl

    try:
        return read_jsonl(files)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--rules", "rules_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--events",
    "event_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON-lines history (each line has a 'type', as for `send`); repeat for several files.",
)
@click.option(
    "--baseline-rules",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The rules to compare with (default: LEADSCORE_RULES_FILE, else the default rules).",
)
@click.option("--from-topics", is_flag=True, help="Read the history from the inbound topics of LEADSCORE_BOOTSTRAP.")
@click.option(
    "--topic-prefix", default=None, help="With --from-topics: the topic prefix (default: LEADSCORE_TOPIC_PREFIX)."
)
@click.option(
    "--until", default=None, help="Settle decay at this instant (RFC 3339 or epoch ms; default: the last event)."
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the candidate's MQL and nurture events here (JSON lines).",
)
@click.option("--limit", default=20, show_default=True, help="Leads listed per difference.")
def replay(
    rules_file: Path,
    event_files: tuple[Path, ...],
    baseline_rules: Path | None,
    from_topics: bool,
    topic_prefix: str | None,
    until: str | None,
    output: Path | None,
    limit: int,
) -> None:
    """Dry-run a candidate rules file on a history: which leads would become MQLs and when, and
    how that differs from the baseline rules. Offline: touches no live state."""
    from collections import Counter

    from streams.history import read_topics
    from streams.replay import parse_instant, run_replay

    if from_topics == bool(event_files):
        raise click.UsageError("give either --events FILE (repeatable) or --from-topics")
    candidate = _rules_or_fail(rules_file)
    try:
        settings = settings_from_env(topic_prefix=topic_prefix)
        until_ms = parse_instant(until) if until else None
    except (SettingsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    baseline = _rules_or_fail(baseline_rules or settings.rules_file)
    if from_topics:
        from streams.kafka_clients import KafkaAccessError

        try:
            records = asyncio.run(read_topics(settings))
        except KafkaAccessError as exc:
            raise click.ClickException(str(exc)) from None
        counts = Counter(record.topic for record in records)
        read = ", ".join(f"{topic} {count:,}" for topic, count in sorted(counts.items()))
        click.echo(f"read from {settings.bootstrap}: {read or 'nothing'}\n")
    else:
        records = _history(event_files)
    click.echo(run_replay(records, candidate, baseline, until_ms, output, limit))
    if output is not None:
        click.echo(f"\ncandidate's MQL and nurture events written to {output}")


def _band(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise click.BadParameter("expected LOW,HIGH, e.g. 0.2,0.4") from None
    if not 0 <= low <= high <= 1:
        raise click.BadParameter("expected 0 <= LOW <= HIGH <= 1")
    return low, high


@main.command()
@click.option(
    "--events",
    "event_files",
    required=True,
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--outcomes",
    "outcome_files",
    required=True,
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Sales feedback (JSON lines of type sales_feedback).",
)
@click.option(
    "--rules",
    "rules_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Default: LEADSCORE_RULES_FILE, else the default rules.",
)
@click.option("--target-band", default="0.2,0.4", show_default=True, help="Wanted MQL->SQL conversion, LOW,HIGH.")
@click.option("--thresholds", default="40:120:5", show_default=True, help="START:STOP:STEP of the thresholds tried.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write calibration.md and calibration.png here.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def calibrate(
    event_files: tuple[Path, ...],
    outcome_files: tuple[Path, ...],
    rules_file: Path | None,
    target_band: str,
    thresholds: str,
    report_dir: Path | None,
    quiet: bool,
) -> None:
    """Recommend an MQL threshold from history and sales outcomes: volume, MQL->SQL conversion and
    won deals captured at each threshold."""
    from scoring.calibration import threshold_range
    from streams.calibrate import run_calibration, summary, write_report

    band = _band(target_band)
    try:
        start, stop, step = (float(part) for part in thresholds.split(":"))
        tried = threshold_range(start, stop, step)
    except ValueError as exc:
        raise click.BadParameter(f"--thresholds: {exc}") from None
    rules = _rules_or_fail(rules_file or settings_from_env().rules_file)
    run = run_calibration(_history(event_files), _history(outcome_files), rules, tried, band, progress=not quiet)
    click.echo(summary(run))
    if report_dir is not None:
        click.echo(f"report: {write_report(run, report_dir)}")


@main.command()
@click.option("--leads", default=5000, show_default=True)
@click.option("--seed", default=1, show_default=True)
@click.option("--start", default="2026-01-01T00:00:00Z", show_default=True, help="When the first journeys may start.")
@click.option("--spread-days", default=90.0, show_default=True, help="Journeys start within this many days.")
@click.option("--events", "events_file", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--outcomes",
    "outcomes_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write each contactable lead's sales outcomes (ground truth).",
)
def synth(leads: int, seed: int, start: str, spread_days: float, events_file: Path, outcomes_file: Path | None) -> None:
    """Write a realistic synthetic history (and its ground-truth sales outcomes) as JSON lines."""
    from streams.history import write_jsonl
    from streams.replay import parse_instant
    from streams.synthetic import history

    try:
        start_ms = parse_instant(start)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    journeys = history(seed, leads, start_ms, int(spread_days * 86_400_000))
    events = sorted((e for j in journeys for e in j.events), key=lambda e: e.occurred_at)
    click.echo(f"{write_jsonl(events_file, events):>8} events -> {events_file}")
    if outcomes_file is not None:
        outcomes = sorted((e for j in journeys for e in j.outcomes), key=lambda e: e.occurred_at)
        click.echo(f"{write_jsonl(outcomes_file, outcomes):>8} outcomes -> {outcomes_file}")
