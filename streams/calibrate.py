"""``leadscore calibrate``: MQL volume, MQL->SQL conversion and won deals captured at each
threshold, the recommended threshold, and a Markdown report with a chart."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scoring.calibration import Calibration, ThresholdRow, calibrate, outcomes_from
from scoring.engine import InputRecord, Scorer
from scoring.errors import InvalidEvent
from scoring.events import Event, EventKind, decode_event
from scoring.replay import replay
from scoring.rules import Rules

REPORT_NAME = "calibration.md"
CHART_NAME = "calibration.png"


@dataclass(frozen=True)
class CalibrationRun:
    """A calibration and what it was computed from."""

    calibration: Calibration
    rules: Rules
    scored_events: int
    unreadable_outcomes: int


def _feedback(records: Sequence[InputRecord]) -> tuple[list[Event], int]:
    events: list[Event] = []
    unreadable = 0
    for record in records:
        try:
            events.append(decode_event(EventKind.SALES_FEEDBACK, record.key, record.value))
        except InvalidEvent:
            unreadable += 1
    return events, unreadable


def run_calibration(
    events: Sequence[InputRecord],
    outcomes: Sequence[InputRecord],
    rules: Rules,
    thresholds: Sequence[float],
    band: tuple[float, float],
    progress: bool = True,
) -> CalibrationRun:
    """Score each lead's marketing history once (sales feedback is used only as outcomes), keep
    its peak score, and evaluate every threshold from the peaks."""
    from tqdm import tqdm

    marketing = [r for r in events if r.kind is not EventKind.SALES_FEEDBACK]
    feedback = [r for r in (*events, *outcomes) if r.kind is EventKind.SALES_FEEDBACK]
    with tqdm(total=len(marketing), unit="event", desc="scoring", disable=not progress, leave=False) as bar:

        def advance(done: int) -> None:
            bar.update(done - bar.n)

        result = replay(Scorer(rules), marketing, track_peaks=True, progress=advance)
    peaks = {lead: result.peak(lead) for lead in result.states}
    decoded, unreadable = _feedback(feedback)
    calibration = calibrate(peaks, outcomes_from(decoded), thresholds, band)
    return CalibrationRun(calibration, rules, len(marketing), unreadable)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _row_text(row: ThresholdRow) -> str:
    return (
        f"threshold {row.threshold:g}: {row.mqls:,} MQLs, {_percent(row.conversion)} MQL->SQL, "
        f"{_percent(row.won_share)} of won deals captured"
    )


def _current(run: CalibrationRun) -> ThresholdRow | None:
    return next((r for r in run.calibration.rows if r.threshold == run.rules.mql_threshold), None)


def summary(run: CalibrationRun) -> str:
    """The table and the recommendation as text for the terminal."""
    c = run.calibration
    low, high = c.band
    lines = [
        f"{c.leads:,} leads ({run.scored_events:,} events), {c.converted:,} qualified by sales, {c.won:,} won; "
        f"rules {run.rules.version}",
        f"{'threshold':>9} {'MQLs':>7} {'SQLs':>6} {'MQL->SQL':>9} {'won captured':>13}",
    ]
    for row in c.rows:
        mark = "  in band" if row.in_band else ""
        lines.append(
            f"{row.threshold:>9g} {row.mqls:>7,} {row.sqls:>6,} {_percent(row.conversion):>9} "
            f"{_percent(row.won_share):>13}{mark}"
        )
    lines.append("")
    if c.recommended is not None:
        lines.append(f"recommended {_row_text(c.recommended)} (target {low:.0%}-{high:.0%})")
    else:
        nearest = f"; nearest: {_row_text(c.closest)}" if c.closest else ""
        lines.append(f"no threshold gives {low:.0%}-{high:.0%} MQL->SQL{nearest}")
    current = _current(run)
    if current is not None:
        lines.append(f"current  {_row_text(current)}")
    if run.unreadable_outcomes:
        lines.append(f"{run.unreadable_outcomes:,} outcome records could not be read and were ignored")
    return "\n".join(lines)


def draw_chart(run: CalibrationRun, path: Path) -> None:
    """Conversion and won deals captured (left axis, with the target band) and MQL volume (bars,
    right axis) against the threshold; the recommended and current thresholds are marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = run.calibration
    x = [row.threshold for row in c.rows]
    step = (x[1] - x[0]) if len(x) > 1 else 1.0
    figure, rates = plt.subplots(figsize=(9, 5.6), dpi=110)
    volume = rates.twinx()
    volume.bar(x, [row.mqls for row in c.rows], width=step * 0.7, color="#d9dde3", label="MQLs (right axis)")
    volume.set_ylabel("MQLs (leads handed to sales)")
    rates.set_zorder(volume.get_zorder() + 1)
    rates.patch.set_visible(False)
    low, high = c.band
    rates.axhspan(low * 100, high * 100, color="#2e7d32", alpha=0.12, label=f"target band {low:.0%}-{high:.0%}")
    nan = float("nan")  # no MQLs at that threshold: a gap in the line
    conversion = [nan if row.conversion is None else row.conversion * 100 for row in c.rows]
    won = [nan if row.won_share is None else row.won_share * 100 for row in c.rows]
    rates.plot(x, conversion, marker="o", color="#1565c0", label="MQL->SQL conversion")
    rates.plot(x, won, marker="s", color="#ef6c00", linestyle="--", label="won deals captured")
    if c.recommended is not None:
        rates.axvline(
            c.recommended.threshold, color="#2e7d32", linewidth=2, label=f"recommended {c.recommended.threshold:g}"
        )
    rates.axvline(run.rules.mql_threshold, color="#555555", linestyle=":", label=f"current {run.rules.mql_threshold:g}")
    rates.set_ylim(0, 100)
    rates.set_xlabel("MQL threshold (score)")
    rates.set_ylabel("percent")
    rates.set_title(f"MQL threshold calibration: {c.leads:,} leads, {c.converted:,} SQLs, {c.won:,} won")
    handles, labels = rates.get_legend_handles_labels()
    more_handles, more_labels = volume.get_legend_handles_labels()
    rates.legend(
        handles + more_handles,
        labels + more_labels,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12),
        ncol=3,
        fontsize=8,
    )
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def markdown(run: CalibrationRun, chart_name: str) -> str:
    """The report: recommendation, chart, how to read it, every threshold, and the method."""
    c = run.calibration
    low, high = c.band
    if c.recommended is not None:
        verdict = f"**Recommended: {_row_text(c.recommended)}.**"
    else:
        nearest = f" The nearest is {_row_text(c.closest)}." if c.closest else ""
        verdict = f"**No threshold gives {low:.0%}-{high:.0%} MQL->SQL.**{nearest}"
    current = _current(run)
    lines = [
        "# MQL threshold calibration",
        "",
        f"- History: {c.leads:,} leads, {run.scored_events:,} marketing events; sales qualified "
        f"{c.converted:,} of the leads and won {c.won:,}.",
        f"- Rules: `{run.rules.version}`, current MQL threshold {run.rules.mql_threshold:g}"
        + (f" ({_row_text(current)})." if current else "."),
        f"- Target MQL->SQL conversion: {low:.0%} to {high:.0%}.",
        "",
        verdict,
        "",
        f"![calibration chart]({chart_name})",
        "",
        "## How to read the chart",
        "",
        "- The x axis is the MQL threshold. Grey bars (right axis) are how many leads would have been "
        "handed to sales at that threshold: volume falls as the threshold rises.",
        "- The blue line is MQL->SQL conversion: of those leads, the share that sales qualified. "
        "It rises with the threshold when the score ranks leads well; a flat line means the score "
        "does not separate good leads from poor ones.",
        "- The green band is the target conversion. The recommended threshold (green line) is the "
        "one inside the band with the most volume; the dotted line is the current threshold.",
        "- The orange dashed line is the share of all won deals whose lead would still have been an "
        "MQL: raising the threshold past the point where it drops hands fewer leads to sales and "
        "loses deals.",
        "",
        "## Every threshold",
        "",
        "| threshold | MQLs | SQLs | MQL->SQL | won captured | in band |",
        "|---:|---:|---:|---:|---:|:---:|",
    ]
    for row in c.rows:
        lines.append(
            f"| {row.threshold:g} | {row.mqls:,} | {row.sqls:,} | {_percent(row.conversion)} | "
            f"{_percent(row.won_share)} | {'yes' if row.in_band else ''} |"
        )
    lines += [
        "",
        "## Method",
        "",
        "Each lead's history is scored once in time order with these rules, keeping the highest "
        "score it reached after any event; at threshold T the lead is an MQL exactly when that peak "
        "reaches T (a crossing is decided after each event, so hysteresis and decay change how often "
        "a lead crosses, never whether it crosses at least once). Sales feedback is used only as the "
        "outcome: a lead counts as converted with an `sql`, `won` or `lost` outcome.",
        "",
        "Outcomes exist only for the leads sales actually worked: leads that were never handed over "
        "count as not converted, so conversion below the current threshold is understated. Read the "
        "curve as a ranking check and move the threshold in small steps, then compare with `leadscore "
        "replay` and with the live funnel (`GET /funnel`).",
        "",
    ]
    return "\n".join(lines)


def write_report(run: CalibrationRun, directory: Path) -> Path:
    """Write the Markdown report and its chart into ``directory``; returns the report's path."""
    directory.mkdir(parents=True, exist_ok=True)
    draw_chart(run, directory / CHART_NAME)
    report = directory / REPORT_NAME
    report.write_text(markdown(run, CHART_NAME), encoding="utf-8")
    return report
