"""The release gate: a model ships only if it beats the best tuned baseline by a margin.

The comparison is on the test split, full ranking, with the metric early stopping optimises
(`eval.selection_metric`); the margin is relative (`pipeline.gate_margin`): the model needs at least
`best baseline x (1 + margin)`. Baselines that were skipped (e.g. EASE on a huge catalogue) do not
count; with no evaluated baseline at all there is nothing to beat, and the gate refuses rather than
waving the model through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from scenerec.errors import ScenerecError


class GateError(ScenerecError):
    """The model did not earn its release (or the metrics needed to judge it are missing)."""


@dataclass(frozen=True)
class GateResult:
    """The verdict and the numbers behind it."""

    metric: str
    model: float
    best_baseline: str
    baseline: float
    margin: float
    required: float

    @property
    def passed(self) -> bool:
        return self.model >= self.required

    def describe(self) -> str:
        """One line: what was compared, what was required, the verdict."""
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"gate {verdict}: model test {self.metric} {self.model:.4f} vs required {self.required:.4f} "
            f"(best baseline {self.best_baseline} {self.baseline:.4f} x (1 + pipeline.gate_margin "
            f"{self.margin:g}))"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def judge(
    model: Mapping[str, Any], baselines: Mapping[str, Mapping[str, Any]], metric: str, margin: float
) -> GateResult:
    """Compare the model's test `metric` with the best evaluated baseline's (never raises on a loss).

    Args:
        model: The `model` section of metrics.json (its `test` mapping holds `metric`).
        baselines: The `baselines` section: name -> result with a `test` mapping, or a `skipped` note.
        metric: The metric to compare, e.g. "ndcg@10".
        margin: Relative margin: the model needs `best x (1 + margin)`.

    Raises:
        GateError: A metric is missing or no baseline was evaluated, so there is nothing to judge by.
    """
    if metric not in model.get("test", {}):
        raise GateError(f"gate: the model's metrics have no test {metric!r} (eval.selection_metric)")
    evaluated = {name: result["test"] for name, result in baselines.items() if "test" in result}
    if not evaluated:
        raise GateError(
            "gate: no baseline was evaluated, so there is nothing to beat (baselines.names is empty "
            "or every baseline was skipped)"
        )
    missing = sorted(name for name, test in evaluated.items() if metric not in test)
    if missing:
        raise GateError(f"gate: baseline {missing[0]!r} has no test {metric!r}")
    best = max(evaluated, key=lambda name: float(evaluated[name][metric]))
    baseline = float(evaluated[best][metric])
    return GateResult(
        metric=metric,
        model=float(model["test"][metric]),
        best_baseline=best,
        baseline=baseline,
        margin=margin,
        required=baseline * (1.0 + margin),
    )


def check_gate(
    model: Mapping[str, Any], baselines: Mapping[str, Mapping[str, Any]], metric: str, margin: float
) -> GateResult:
    """`judge`, raising `GateError` with the verdict line when the model falls short."""
    result = judge(model, baselines, metric, margin)
    if not result.passed:
        raise GateError(f"{result.describe()}; the model is not published or deployed")
    return result
