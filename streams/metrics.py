"""The service's own Prometheus metrics: ``leadscore_`` prefix, base units, bounded labels."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from scoring.compiled import is_compiled
from scoring.engine import BatchResult

# The synchronous steps of scoring a batch whose CPU is counted (see ``Metrics.step_cpu``).
CPU_STEPS = ("read", "score", "encode", "store")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


class Metrics:
    """All collectors of one worker, in their own registry. Labels never carry a lead or an email."""

    def __init__(self, version: str, rules_version: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.build_info = Info("leadscore_build", "Version of the worker and of its rules.", registry=r)
        self.build_info.info({"version": version, "rules_version": rules_version})
        self.scoring_core_compiled = Gauge(
            "leadscore_scoring_core_compiled",
            "1 if the scoring core runs compiled (mypyc, deploy/compile-core.sh), 0 if it runs its Python sources.",
            registry=r,
        )
        self.scoring_core_compiled.set(1 if is_compiled() else 0)
        self.heap_huge_pages = Gauge(
            "leadscore_heap_huge_pages",
            "1 if glibc's malloc runs on transparent huge pages (streams/huge_pages.py), else 0.",
            registry=r,
        )
        self.events_consumed = Counter(
            "leadscore_events_consumed",
            "Inbound records done with (scored, duplicates, dead-lettered, passed on), once written.",
            ["topic", "event_type"],
            registry=r,
        )
        self.events_scored = Counter(
            "leadscore_events_scored", "Events applied to a lead's score.", ["event_type"], registry=r
        )
        self.duplicates = Counter(
            "leadscore_duplicate_events", "Events whose event_id was already counted.", registry=r
        )
        self.dead_letters = Counter(
            "leadscore_dead_letters", "Records sent to the dead-letter topic.", ["reason"], registry=r
        )
        self.mql_events = Counter("leadscore_mql_events", "MQL events sent to the handoff topic.", registry=r)
        self.nurture_events = Counter("leadscore_nurture_events", "Returns to nurture sent.", ["reason"], registry=r)
        self.step_cpu = Counter(
            "leadscore_step_cpu_seconds",
            "CPU seconds of the worker's thread in each synchronous step of scoring a batch: read (the "
            "batch's records and their leads' states made ready), score (the scoring core), encode (the "
            "changed states encoded, the due index), store (RocksDB written). The rest of the process CPU "
            "is the Kafka clients, the event loop and Faust.",
            ["step"],
            registry=r,
        )
        self.cpu_read, self.cpu_score, self.cpu_encode, self.cpu_store = (self.step_cpu.labels(s) for s in CPU_STEPS)
        self.scoring_duration = Histogram(
            "leadscore_scoring_duration_seconds",
            "Time to score one batch of records (one record in the per-event agent).",
            buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1),
            registry=r,
        )
        self.end_to_end_latency = Histogram(
            "leadscore_end_to_end_latency_seconds",
            "From an event's occurred_at (source=event) or its record timestamp (source=record) "
            "to the send of the MQL event it triggered.",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fetch_delay = Histogram(
            "leadscore_fetch_delay_seconds",
            "From the newest record timestamp of a batch to the start of its scoring: how old records "
            "are when the worker gets them (the share of the end-to-end latency before the worker).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.leads = Gauge("leadscore_leads", "Leads in this worker's table, by stage.", ["stage"], registry=r)
        self.due_leads = Gauge(
            "leadscore_due_index_leads", "Qualified leads with a scheduled return to nurture.", registry=r
        )
        self.ticks = Counter("leadscore_ticks", "Decay ticks processed.", registry=r)
        self.decay_clock_behind = Gauge(
            "leadscore_decay_clock_behind_seconds",
            "How far a partition's decay clock was behind the service clock at its last tick: held "
            "back to the newest record read while the partition is not read to its end (+Inf: none "
            "read yet), so no lead returns to nurture before the events that could keep it qualified.",
            ["partition"],
            registry=r,
        )
        self.zombie_writes_refused = Counter(
            "leadscore_zombie_writes_refused",
            "Batches and ticks not written because the group no longer counted this worker as a member "
            "(frozen past its session timeout): read again, by this worker or the partition's next owner.",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "leadscore_consumer_lag",
            "Records not yet committed: end offset minus committed offset.",
            ["topic", "partition"],
            registry=r,
        )
        self.consumer_lag_seconds = Gauge(
            "leadscore_consumer_lag_seconds",
            "Age of the records waiting: now minus the timestamp of the last record processed, while lag > 0.",
            ["topic", "partition"],
            registry=r,
        )
        self.records_held = Gauge(
            "leadscore_records_held",
            "Records fetched but held back until the partition's other topics reach their time "
            "(topics read in step by time): high and lasting means a topic lags behind in time.",
            ["topic", "partition"],
            registry=r,
        )
        self.state_writes_held = Counter(
            "leadscore_state_writes_held_total",
            "Changed lead states held back instead of written after their batch (write-behind while "
            "catching up; a lead held in several batches counts in each): against "
            "leadscore_changelog_records_total, the writes saved.",
            registry=r,
        )
        self.states_held_back = Gauge(
            "leadscore_states_held_back",
            "Changed lead states held back from the table while their partition catches up "
            "(write-behind, LEADSCORE_WRITE_BEHIND); their input is committed once they are written.",
            registry=r,
        )
        self.partition_progress = Gauge(
            "leadscore_partition_last_progress_timestamp_seconds",
            "Unix time at which the partition last had a record processed.",
            ["topic", "partition"],
            registry=r,
        )
        self.commit_stalls = Counter(
            "leadscore_commit_stalls",
            "Partitions read again from their committed offset because it had not moved for a minute "
            "while the worker read past it (an offset never acked). Should stay 0: the worker's warning "
            "gives the partition's offsets.",
            ["topic"],
            registry=r,
        )
        self.rebalances = Counter("leadscore_rebalances", "Partition assignments received.", registry=r)
        self.recovery_in_progress = Gauge(
            "leadscore_table_recovery_in_progress", "1 while the lead table is being recovered.", registry=r
        )
        self.processing_errors = Counter(
            "leadscore_processing_errors",
            "Unexpected errors while processing a record (the record is dead-lettered).",
            ["stage"],
            registry=r,
        )
        self.changelog_records = Counter(
            "leadscore_changelog_records", "Lead-table changelog records sent (one per lead per batch).", registry=r
        )
        # Series that alerts compute rates of exist from the start, so the first error is seen.
        for stage in ("score", "batch", "decay"):
            self.processing_errors.labels(stage)
        self.dead_letters.labels("scoring_error")
        self.recoveries = Counter(
            "leadscore_table_recoveries", "Completed table recoveries (after each rebalance).", registry=r
        )
        self.funnel_transitions = Counter(
            "leadscore_funnel_transitions",
            "Leads moved between stages, by the rules version of their MQL crossing.",
            ["from_stage", "to_stage", "rules_version"],
            registry=r,
        )
        self.feedback_events = Counter(
            "leadscore_feedback_events", "Sales feedback applied to a lead, by outcome.", ["outcome"], registry=r
        )
        self.identity_events = Counter(
            "leadscore_identity_events",
            "Events of the identity agent by outcome: parked, forwarded (to their lead), expired (past the "
            "window), overflow (past the bound per key), duplicate (already parked).",
            ["outcome"],
            registry=r,
        )
        self.identity_sent = Counter(
            "leadscore_identity_messages_sent",
            "Messages the scoring path sent to lead-identities: visit (anonymous), email_known (a profile's address).",
            ["type"],
            registry=r,
        )
        self.identity_links = Counter(
            "leadscore_identity_links",
            "Identify and e-mail-known messages by result: linked, repeated (same lead), conflict (refused).",
            ["result"],
            registry=r,
        )
        self.identity_sweeps = Counter(
            "leadscore_identity_sweeps", "Sweeps of a lead-identities partition's keys done.", registry=r
        )
        self.identity_swept_keys = Counter(
            "leadscore_identity_swept_keys",
            "Identity keys deleted by the sweep (tombstoned): unlinked, every parked event past the window.",
            registry=r,
        )
        self.dead_letter_blocked = Gauge(
            "leadscore_dead_letter_blocked",
            "1 while the dead-letter topic refuses records: consumption waits and retries, nothing is skipped.",
            registry=r,
        )
        self.dead_letter_retries = Counter(
            "leadscore_dead_letter_retries", "Attempts to send dead letters that the broker refused.", registry=r
        )
        self.gc_pauses = Histogram(
            "leadscore_gc_pause_seconds",
            "Garbage-collector pauses (every partition of the worker waits), by generation.",
            ["generation"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.erasures = Counter("leadscore_erasures", "Erasure requests applied (lead state deleted).", registry=r)
        self.erased_events_dropped = Counter(
            "leadscore_erased_events_dropped",
            "Events of an erased lead that occurred before its erasure: dropped, not scored, not dead-lettered.",
            registry=r,
        )

    def count_funnel(self, result: BatchResult) -> None:
        """Count a scoring result's stage transitions and applied sales feedback."""
        for move in result.transitions:
            self.funnel_transitions.labels(move.from_stage, move.to_stage, move.rules_version).inc()
        for outcome, count in result.feedback.items():
            self.feedback_events.labels(outcome).inc(count)
