"""The release gate: does a challenger adapter measurably beat what users get today?

    verdict = decide(challenger, incumbent, GatePolicy.from_yaml("evaluation/gate.yaml"))

`incumbent` holds the champion's metrics, or the base model's when there is no
champion yet. Pure: metrics in, verdict with its reasons out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

DEFAULT_GATE = Path(__file__).with_name("gate.yaml")


@dataclass
class GatePolicy:
    primary_metric: str = "identifier_match"
    min_improvement: float = 0.02  # the challenger must beat the incumbent's primary metric by this much
    guards: dict[str, float] = field(default_factory=lambda: {
        "format_validity": 0.9, "citation_accuracy": 0.5, "abstention": 0.5, "adherence": 0.5})
    max_regression: float = 0.05  # no guarded metric may drop more than this below the incumbent's

    @classmethod
    def from_yaml(cls, path: str | Path = DEFAULT_GATE) -> "GatePolicy":
        data = yaml.safe_load(Path(path).read_text()) or {}
        unknown = set(data) - set(asdict(cls()))
        if unknown:
            raise ValueError(f"{path}: unknown gate settings {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass
class Verdict:
    passed: bool
    reasons: list[str]
    primary_metric: str
    challenger: float
    incumbent: float

    def as_dict(self) -> dict:
        return asdict(self)


def decide(challenger: dict[str, float], incumbent: dict[str, float], policy: GatePolicy) -> Verdict:
    """Pass only if every rule holds; the reasons list each rule's outcome, failures first.

    A metric the challenger was not measured on (no probe of its kind) fails its rule: unmeasured is not safe.
    """
    failures, passes = [], []
    primary = policy.primary_metric
    new, old = challenger.get(primary), incumbent.get(primary)
    if new is None or old is None:
        who = "challenger" if new is None else "incumbent"
        failures.append(f"{primary}: not measured for the {who}")
        new, old = new or 0.0, old or 0.0
    else:
        line = f"{primary}: {new:.3f} vs {old:.3f} (needs +{policy.min_improvement:.3f})"
        (passes if new >= old + policy.min_improvement else failures).append(line)
    for name, floor in policy.guards.items():
        if name not in challenger:
            failures.append(f"{name}: not measured (no probe of its kind in the evaluation)")
            continue
        value = float(challenger[name])
        (passes if value >= floor else failures).append(f"{name}: {value:.3f} (guard {floor:.3f})")
        if name in incumbent:
            drop = float(incumbent[name]) - value
            if drop > policy.max_regression:
                failures.append(f"{name} regressed by {drop:.3f} (tolerance {policy.max_regression:.3f})")
    return Verdict(passed=not failures, reasons=[f"FAIL {r}" for r in failures] + [f"ok {r}" for r in passes],
                   primary_metric=primary, challenger=float(new), incumbent=float(old))
