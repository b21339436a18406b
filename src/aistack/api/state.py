"""What a running server holds: settings, stores, models, rollout, log, monitors.

The champion and (during a rollout) the challenger are swapped by reference
assignment, so a request sees one consistent model. A poller follows the
registry (champion alias, rollout tags); an evaluator checks rollout guards,
publishes drift gauges and raises server-side alerts every `eval_seconds`.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import mlflow
import numpy as np

from aistack.api.auth import API_PRINCIPAL
from aistack.api.guards import RolloutJudge, Window, end_as_judged
from aistack.api.metrics import ServerMetrics, observe_many
from aistack.api.tracing import Tracing
from aistack.contract import UseCase
from aistack.errors import ConfigError, LogUnavailableError
from aistack.features.online import OnlineStore, SQLiteStore, open_store, versions
from aistack.features.realtime import LabelResult, apply_labels
from aistack.features.state import EventState, SQLiteEventState, open_event_state
from aistack.governance.audit import AUDIT_HANDOFF_ENV, AuditBuffer, audit_log, entry
from aistack.governance.principals import Policy
from aistack.lake.delta import Lake
from aistack.monitoring.alerts import evaluate_alerts, firing
from aistack.monitoring.consistency import check_consistency
from aistack.registry.aliases import Registry
from aistack.registry.rollout import (
    Rollout,
    rollout_of,
    routes_to_challenger,
)
from aistack.serving.inference import Predictor, load_version, settle_heap
from aistack.serving.log import (
    LOG_HANDOFF_ENV,
    PredictionLog,
    log_wal_dir,
    prediction_log_table,
)
from aistack.serving.requests import (
    LookupTimings,
    RequestFeatures,
    Scored,
    commit_features,
    predict,
    request_features,
)
from aistack.settings import Settings
from aistack.training.profile import StreamingHistograms

log = logging.getLogger("aistack.server")


@dataclass
class ServerState:
    """Everything the routes read."""

    use_case: UseCase
    settings: Settings
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    predictor: Predictor | None = None
    challenger: Predictor | None = None
    rollout: Rollout | None = None
    histograms: StreamingHistograms | None = None
    online_versions_cached: dict[str, int] = field(default_factory=dict)
    champion_window: Window = field(default_factory=Window)
    challenger_window: Window = field(default_factory=Window)
    http_window: Window = field(default_factory=Window)
    _judge_state: RolloutJudge | None = None
    _histogram_columns: list[int | None] = field(default_factory=list)
    _firing: set[str] = field(default_factory=set)
    lake: Lake = field(init=False)
    store: OnlineStore = field(init=False)
    events: EventState | None = field(init=False)
    registry: Registry = field(init=False)
    log: PredictionLog = field(init=False)
    policy: Policy = field(init=False)
    audit: AuditBuffer | None = field(init=False)
    tracing: Tracing = field(init=False)
    _shadow: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="shadow")
    )
    _shadow_pending: int = 0
    _shadow_lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    limiter: Any = None
    """The scoring threads' anyio CapacityLimiter (`scoring_threads`), made by
    the app's lifespan inside the event loop."""
    _threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.policy = Policy.load(self.settings.policy)
        log = audit_log(self.settings, os.environ)
        self.audit = (
            AuditBuffer(
                log.path,
                flush_seconds=self.settings.audit_flush_seconds,
                key=log.key,
                anchor=log.anchor,
                handoff=os.environ.get(AUDIT_HANDOFF_ENV) == "1",
            )
            if self.settings.audit_predictions
            else None
        )
        self.lake = Lake(self.settings.tables_dir)
        self.store = open_store(
            self.settings.online_url, self.settings.workspace, self.use_case.name
        )
        self.events = (
            open_event_state(
                self.settings.online_url, self.settings.workspace, self.use_case.name
            )
            if self.use_case.aggregation_views
            else None
        )
        self.registry = Registry(self.lake, self.settings.mlflow_uri, audit=log)
        self.tracing = Tracing(
            self.settings.otlp_endpoint, service=f"aistack-{self.use_case.name}"
        )
        table = prediction_log_table(self.use_case)
        self.log = PredictionLog(
            self.lake,
            table,
            flush_seconds=self.settings.log_flush_seconds,
            feature_names=self.use_case.feature_names,
            wal_dir=log_wal_dir(self.settings.workspace, table),
            handoff=os.environ.get(LOG_HANDOFF_ENV) == "1",
        )

    @property
    def scoring_threads(self) -> int:
        """Threads that score at once: 1 on a local SQLite state (CPU-bound
        Python), 4 where a network store's round trips can overlap."""
        local = self.events is None or isinstance(self.events, SQLiteEventState)
        return 1 if local and isinstance(self.store, SQLiteStore) else 4

    # --- models -------------------------------------------------------------

    def _load(self, version: int) -> tuple[Predictor, dict[str, Any] | None]:
        loaded = load_version(self.registry, self.use_case.name, version)
        settle_heap()  # full collections no longer rescan the models and modules
        return loaded

    def refresh_model(self) -> bool:
        """Follow the registry: champion alias and rollout. True if anything changed.

        One registry call for both (the poll's Python holds the GIL the
        requests wait for: 4.7 -> 2.8 ms a poll on SQLite)."""
        aliases, tags = self.registry.registered(self.use_case.name)
        changed = self._refresh_champion(aliases.get("champion"))
        return self._refresh_rollout(rollout_of(tags)) or changed

    def _refresh_champion(self, version: int | None) -> bool:
        name = self.use_case.name
        current = self.predictor
        if version is None or (current is not None and current.version == version):
            return False
        predictor, profile = self._load(version)
        names = [*self.use_case.feature_names, "score"]
        self.histograms = (
            StreamingHistograms(profile, names)
            if profile is not None and self.settings.drift_histograms
            else None
        )
        # where each histogram column sits in the feature matrix (None: the score)
        self._histogram_columns = [
            predictor.features.index(n) if n in predictor.features else None
            for n in (self.histograms.names if self.histograms else [])
        ]
        self.predictor = predictor  # one reference assignment: old or new, never mixed
        if current is not None:
            self.metrics.model.remove(
                current.name, str(current.version), current.single, current.batch
            )
            self.metrics.swaps.inc()
        self.metrics.model.labels(
            name, str(version), predictor.single, predictor.batch
        ).set(1)
        log.info(
            "serving %s version %s (single row: %s, batch: %s)%s",
            name,
            version,
            predictor.single,
            predictor.batch,
            f"; onnx unavailable: {predictor.onnx_error}"
            if predictor.onnx_error
            else "",
        )
        return True

    def _refresh_rollout(self, rollout: Rollout | None) -> bool:
        active = rollout if rollout is not None and rollout.active else None
        if active is None:
            changed = self.rollout is not None
            self.rollout, self.challenger = None, None
            return changed
        if self.challenger is None or self.challenger.version != active.version:
            self.challenger, _ = self._load(active.version)
            self._judge_state = RolloutJudge(self.use_case.monitoring.guards)
            self.challenger_window.take()
            log.info("%s rollout of version %s started", active.mode, active.version)
        changed = self.rollout != active
        self.rollout = active
        return changed

    # --- requests -----------------------------------------------------------

    def score(
        self,
        payloads: list[dict[str, Any]],
        route: str,
        *,
        explain: bool = False,
        principal: str = API_PRINCIPAL,
    ) -> list[Scored]:
        """Answer payloads: champion, or the canary arm for sticky entities
        (with each answer's explanation when `explain`).

        Features are computed once for the batch; the events join the online
        state after they are scored, whichever arm answered.
        """
        champion, challenger, rollout = self.predictor, self.challenger, self.rollout
        assert champion is not None
        with self.tracing.span("aistack.features"):
            found = request_features(self.use_case, self.store, self.events, payloads)
        mask = [False] * len(payloads)
        if rollout is not None and challenger is not None and rollout.mode == "canary":
            key = self.use_case.labels.columns[0]
            mask = [routes_to_challenger(rollout, p[key]) for p in payloads]
        with self.tracing.span("aistack.model"):
            if any(mask):
                assert challenger is not None
                scored = self._canary(
                    found, mask, champion, challenger, explain=explain
                )
            else:
                scored = self._arm(
                    champion, found, None, self.champion_window, explain=explain
                )
        with self.tracing.span("aistack.log"):
            commit_features(self.use_case, self.events, found)
            self._count_late(scored)
            self.log.append(
                scored,
                payloads,
                route=route,
                online_versions=self.online_versions_cached,
            )
            self._audit(scored, principal)
        if rollout is not None and challenger is not None and rollout.mode == "shadow":
            self._submit_shadow(challenger, found, payloads, route)
        return scored

    def _submit_shadow(
        self,
        challenger: Predictor,
        found: RequestFeatures,
        payloads: list[dict[str, Any]],
        route: str,
    ) -> None:
        """Queue shadow scoring, or drop it (counted) when the queue is full: the
        shadow arm may lose work under load, the champion's log rows may not."""
        with self._shadow_lock:
            if (
                self._shadow_pending >= self.settings.shadow_queue
                or self._stop.is_set()
            ):
                self.metrics.shadow_dropped.inc(len(payloads))
                return
            self._shadow_pending += 1
        self._shadow.submit(self._shadow_score, challenger, found, payloads, route)

    def _audit(self, scored: list[Scored], principal: str) -> None:
        """One audit record per answer: who, which model, which request; not the
        payload. Written ahead before the answer leaves (503 when it cannot be)."""
        if self.audit is None:
            return
        name = self.use_case.name
        try:
            self.audit.record(
                [
                    entry(
                        principal,
                        "predict",
                        {
                            "use_case": name,
                            "model_version": s.model_version,
                            "request_id": s.request_id,
                        },
                    )
                    for s in scored
                ]
            )
        except OSError as exc:
            raise LogUnavailableError(f"audit log: {exc}") from exc

    def label(self, labels: list[tuple[Any, float]]) -> LabelResult:
        """Attach late-arriving labels to the events in the online state."""
        if self.events is None:
            return LabelResult(len(labels), 0, [])
        result = apply_labels(self.events, self.use_case, labels)
        self.metrics.labels.inc(result.applied)
        return result

    def _count_late(self, scored: list[Scored]) -> None:
        for s in scored:
            for view in s.late:
                self.metrics.late.labels(view).inc()
                log.warning(
                    "late event %s (view %s): served from the events before it",
                    s.request_id,
                    view,
                )

    def _arm(
        self,
        predictor: Predictor,
        found: RequestFeatures,
        rows: list[int] | None,
        window: Window,
        *,
        explain: bool = False,
    ) -> list[Scored]:
        timings = LookupTimings()
        start = time.perf_counter()
        scored = predict(
            self.use_case, predictor, found, rows, timings=timings, explain=explain
        )
        window.record(
            len(scored),
            time.perf_counter() - start + found.lookup_seconds,
            [s.score for s in scored],
        )
        self._observe(scored, timings)
        return scored

    def _canary(
        self,
        found: RequestFeatures,
        mask: list[bool],
        champion: Predictor,
        challenger: Predictor,
        *,
        explain: bool = False,
    ) -> list[Scored]:
        picked = [i for i, m in enumerate(mask) if m]
        rest = [i for i, m in enumerate(mask) if not m]
        start = time.perf_counter()
        try:
            answered = predict(
                self.use_case, challenger, found, picked, explain=explain
            )
            self.challenger_window.record(
                len(picked), time.perf_counter() - start, [s.score for s in answered]
            )
            for s in answered:
                s.arm = "challenger"
        except Exception:
            self.challenger_window.record(
                len(picked), time.perf_counter() - start, [], errors=len(picked)
            )
            answered = self._arm(
                champion, found, picked, self.champion_window, explain=explain
            )
        others = (
            self._arm(champion, found, rest, self.champion_window, explain=explain)
            if rest
            else []
        )
        by_id = iter(answered), iter(others)
        return [next(by_id[0]) if m else next(by_id[1]) for m in mask]

    def _shadow_score(
        self,
        challenger: Predictor,
        found: RequestFeatures,
        payloads: list[dict[str, Any]],
        route: str,
    ) -> None:
        try:
            self._shadow_scored(challenger, found, payloads, route)
        finally:
            with self._shadow_lock:
                self._shadow_pending -= 1

    def _shadow_scored(
        self,
        challenger: Predictor,
        found: RequestFeatures,
        payloads: list[dict[str, Any]],
        route: str,
    ) -> None:
        start = time.perf_counter()
        try:
            scored = predict(self.use_case, challenger, found)
        except Exception:
            self.challenger_window.record(
                len(payloads), time.perf_counter() - start, [], errors=len(payloads)
            )
            return
        self.challenger_window.record(
            len(payloads), time.perf_counter() - start, [s.score for s in scored]
        )
        for s in scored:
            s.arm = "shadow"
        self.log.append(
            scored,
            payloads,
            route=f"{route}_shadow",
            online_versions=self.online_versions_cached,
        )

    def _observe(self, scored: list[Scored], timings: LookupTimings) -> None:
        metrics = self.metrics
        metrics.lookup.observe(timings.lookup)
        if scored:
            version = str(scored[0].model_version)
            observe_many(metrics.scores.labels(version), [s.score for s in scored])
            for view in self.use_case.views:
                ages = [s.feature_age_seconds.get(view.name) for s in scored]
                observe_many(
                    metrics.feature_age.labels(view.name),
                    [a for a in ages if a is not None],
                )
                unknown = sum(view.name in s.unknown_entities for s in scored)
                if unknown:
                    metrics.unknown.labels(view.name).inc(unknown)
        histograms = self.histograms
        if histograms is not None and timings.matrix is not None and scored:
            scores = np.array([s.score for s in scored])
            matrix = timings.matrix
            columns = [
                scores if i is None else matrix[:, i] for i in self._histogram_columns
            ]
            histograms.observe(np.column_stack(columns))

    # --- checks -------------------------------------------------------------

    def evaluate(self) -> None:
        """Rollout guards, drift gauges and server-side alerts, once."""
        champion = self.champion_window.take()
        challenger = self.challenger_window.take()
        http = self.http_window.take()
        if self.rollout is not None and self.challenger is not None:
            self._judge(champion, challenger)
        if self.histograms is not None:
            for name, value in self.histograms.psi().items():
                self.metrics.drift_psi.labels(name).set(value)
        if http.requests:
            rules = self.use_case.monitoring.alerts
            observed = {
                "error_rate": http.errors / http.requests,
                "latency_p99_ms": float(np.percentile(http.latencies, 99)) * 1000,
            }
            breached = {
                r.name
                for r in rules
                if r.signal in observed and observed[r.signal] > r.threshold
            }
            server_rules = {r.name for r in rules if r.signal in observed}
            if breached != self._firing & server_rules:  # touch Delta on changes only
                evaluate_alerts(
                    self.lake,
                    self.use_case.name,
                    rules,
                    observed,
                    webhook_url=self.settings.alert_webhook_url,
                    source="server",
                )
                self._firing = (self._firing - server_rules) | breached

    def _judge(self, champion: Window, challenger: Window) -> None:
        rollout = self.rollout
        assert rollout is not None
        if self._judge_state is None:
            self._judge_state = RolloutJudge(self.use_case.monitoring.guards)
        verdict = self._judge_state.judge(
            champion, challenger, mode=rollout.mode, version=rollout.version
        )
        if verdict is None:
            return
        if verdict.status == "rolled_back":
            self.challenger, self.rollout = None, None  # traffic back now
        end_as_judged(self.registry, self.use_case.name, verdict, rollout)
        self.challenger, self.rollout = None, None

    # --- lifecycle ----------------------------------------------------------

    def online_versions(self) -> dict[str, int]:
        """Per view, the table version its online values come from: the source
        (silver) version an aggregation state was bootstrapped from, the gold
        version a SQL view was materialized from."""
        found = dict(versions(self.store, [v.name for v in self.use_case.views]))
        if self.events is not None:
            for view in self.use_case.aggregation_views:
                mark = self.events.watermark(view.name)
                if mark is not None:
                    found[view.name] = mark.source_version
        return found

    def check_consistency(self) -> None:
        """Recompute offline the features of the window's logged predictions and
        publish the per-feature mismatch rate (the online/offline alert's input).
        """
        since = datetime.now(UTC) - timedelta(
            seconds=self.settings.consistency_window_seconds
        )
        try:
            report = check_consistency(self.lake, self.use_case, since=since)
        except ConfigError:  # nothing logged yet
            return
        self.metrics.compared.set(report.compared)
        for feature in report.features:
            rate = feature.mismatch_rate + feature.missing_rate
            self.metrics.mismatch.labels(feature.feature).set(rate)

    def _loop(self, seconds: float, step: Any) -> None:  # noqa: ANN401
        while not self._stop.wait(seconds):
            try:
                step()
            except Exception:  # a failed step keeps the server serving
                log.exception("background step failed; will retry")

    def _poll(self) -> None:
        self.policy = self.policy.reloaded()
        self.online_versions_cached = self.online_versions()
        self.refresh_model()

    def _load_alert_states(self) -> None:
        self._firing = set(firing(self.lake, self.use_case.name))

    def start(self) -> None:
        """Load models, start the poller, evaluator and log flusher."""
        mlflow.set_tracking_uri(self.settings.mlflow_uri)
        mlflow.set_registry_uri(self.settings.mlflow_uri)
        try:
            self._load_alert_states()
            self._poll()
        except Exception:
            log.exception("loading the champion failed; /ready reports 503")
        self.log.start()
        if self.audit is not None:
            self.audit.start()
        # Long-lived objects (MLflow, SQLAlchemy, models: ~270k) out of the
        # collector's reach: a full collection over them stalled requests
        # ~130 ms (seen as a 178 ms p99 at 1,000 req/s); after freeze, ~0 ms.
        gc.collect()
        gc.freeze()
        for seconds, step, name in (
            (self.settings.poll_seconds, self._poll, "registry-poller"),
            (self.settings.eval_seconds, self.evaluate, "evaluator"),
            (
                self.settings.consistency_seconds,
                self.check_consistency,
                "consistency-checker",
            ),
        ):
            thread = threading.Thread(
                target=self._loop, args=(seconds, step), name=name, daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop background work and flush every buffered prediction."""
        self._stop.set()
        # Shadow work still queued is dropped (counted), not drained: a backlog
        # must not outlast the grace period and cost the champion's log rows.
        self._shadow.shutdown(wait=True, cancel_futures=True)
        with self._shadow_lock:
            self.metrics.shadow_dropped.inc(self._shadow_pending)
            self._shadow_pending = 0
        self.log.close()
        if self.audit is not None:
            self.audit.close()
        self.tracing.shutdown()
        gc.unfreeze()  # let interpreter shutdown release everything cleanly
