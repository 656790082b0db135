"""`monitor.alerts`: a warning naming a statistic that drifted from its step-0 value, and a stop when asked.

A statistic's step-0 value is the first value this run logged for it: the step-0 evaluation's for `eval/`
metrics, step 1's for per-step statistics (whose samples the initial policy drew). On resume the values
come back from metrics.jsonl, which holds exactly the steps up to the checkpoint, so a resumed run
compares against the same values as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from rl.evaluation.monitors import DIVERSITY, STATISTICS

log = logging.getLogger(__name__)
LEARNER_METRICS = ("kl/k3_mean", "entropy/mean", "loss/kl", "actor/grad_norm")


def watchable_metrics(trained: Sequence[str], gold: Sequence[str], evaluating: bool) -> list[str]:
    """The metrics `monitor.alerts` may name: the per-step monitors, the trained rewards' means, a few
    learner metrics and, when evaluating, the eval rewards' means (gold ones included) and eval monitors."""
    monitors = [f"monitor/{s}" for s in STATISTICS] + [f"monitor/diversity/{d}" for d in DIVERSITY]
    names = [*monitors, *(f"monitor/advantage_corr/{n}" for n in trained), "reward/mean",
             *(f"reward/{n}/mean" for n in trained), *LEARNER_METRICS]
    if evaluating:
        names += ["eval/reward/mean", *(f"eval/reward/{n}/mean" for n in [*trained, *gold]),
                  *(f"eval/{m}" for m in monitors)]
    return names


@dataclass(frozen=True)
class Alert:
    """A statistic `metric` at `step` whose relative drift from `baseline` exceeds `threshold`."""

    metric: str
    step: int
    baseline: float
    value: float
    threshold: float

    @property
    def drift(self) -> float:
        return relative_drift(self.value, self.baseline)

    def message(self) -> str:
        return (f"alert: {self.metric} is {self.value:.4g} at step {self.step}, {self.drift:.1%} away from its "
                f"step-0 value {self.baseline:.4g} (monitor.alerts.{self.metric}: {self.threshold:g})")


def relative_drift(value: float, baseline: float) -> float:
    """|value - baseline| / |baseline|; the absolute difference when the baseline is 0."""
    difference = abs(value - baseline)
    return difference / abs(baseline) if baseline != 0 else difference


class DriftAlerts:
    """Checks each logged row against the thresholds of `monitor.alerts` (metric -> relative threshold).

    history: the rows already logged (metrics.jsonl after a resume), in step order; the first finite
    value of each watched metric among them is its step-0 value.
    """

    def __init__(self, thresholds: Mapping[str, float], stop: bool = False, history: Iterable[Mapping] = ()):
        self.thresholds, self.stop = dict(thresholds), stop
        self.baselines: dict[str, float] = {}
        for row in history:
            self._remember(row)

    def _remember(self, row: Mapping) -> None:
        for metric in self.thresholds:
            value = row.get(metric)
            if metric not in self.baselines and isinstance(value, (int, float)) and math.isfinite(value):
                self.baselines[metric] = float(value)

    def check(self, step: int, row: Mapping[str, float]) -> list[Alert]:
        """The alerts of this row (a metric seen for the first time becomes its baseline instead)."""
        alerts = []
        for metric, threshold in self.thresholds.items():
            value, baseline = row.get(metric), self.baselines.get(metric)
            if baseline is None or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            if relative_drift(float(value), baseline) > threshold:
                alerts.append(Alert(metric, step, baseline, float(value), threshold))
        self._remember(row)
        return alerts

    def report(self, alerts: list[Alert]) -> str | None:
        """Log a warning per alert; the message to stop the run with when `stop` is set and any fired."""
        for alert in alerts:
            log.warning(alert.message())
        if self.stop and alerts:
            return "; ".join(a.message() for a in alerts) + " (monitor.stop_on_alert is set)"
        return None
