"""Outcome specs declared as data: name, unit of analysis, how the label is derived, which rows are eligible.

Adding an outcome means adding a spec here; training, validation, scoring and reporting loop over
:data:`OUTCOMES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from features import dictionary as d
from records import schema as s

Unit = Literal["level", "procedure"]
CANAL_SITES = ("epidural", "foraminal")
VENOUS_SITES = ("venous",)


@dataclass(frozen=True)
class OutcomeSpec:
    """One outcome: what is predicted, for which unit, from which features."""

    name: str
    unit: Unit
    definition: str
    eligibility: str
    label: Callable[[pd.DataFrame], pd.Series]
    features: tuple[d.FeatureSpec, ...]
    rare: bool = False
    risk_name: str | None = None

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def risk_column(self) -> str:
        """The column of scored output: ``<name>_risk`` unless the spec names it."""
        return self.risk_name or f"{self.name}_risk"

    def labels(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(eligible mask, 0/1 labels of the eligible rows) for a model frame."""
        label = self.label(frame).astype("boolean")
        eligible = label.notna().to_numpy()
        return eligible, label[eligible].astype(bool).to_numpy(dtype=np.int8)


def _leak(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(frame[s.LEAKAGE], index=frame.index).astype("boolean")


def _leak_at(sites: tuple[str, ...]) -> Callable[[pd.DataFrame], pd.Series]:
    pattern = r"(?:^|;)(?:" + "|".join(sites) + r")(?:;|$)"

    def label(frame: pd.DataFrame) -> pd.Series:
        leak = _leak(frame)
        at_site = pd.Series(frame[s.LEAKAGE_SITES], index=frame.index).astype("string").str.contains(
            pattern, regex=True).fillna(False).astype(bool)
        return (leak & at_site).astype("boolean").where(leak.notna(), pd.NA)

    return label


def _infection(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(frame[s.INFECTION_90D], index=frame.index).astype("boolean")


_LEVEL_ELIGIBLE = "treated levels whose leakage was assessed (leakage not missing)"

OUTCOMES: tuple[OutcomeSpec, ...] = (
    OutcomeSpec("leakage_any", "level", "any cement outside the vertebral body (label `leakage`)",
                _LEVEL_ELIGIBLE, _leak, d.LEVEL_FEATURES),
    OutcomeSpec("leakage_canal", "level",
                "epidural or foraminal leakage, the neurologically dangerous kind (`leakage_sites`)",
                _LEVEL_ELIGIBLE, _leak_at(CANAL_SITES), d.LEVEL_FEATURES),
    OutcomeSpec("leakage_venous", "level",
                "venous leakage, the route to pulmonary cement embolism (`leakage_sites`)",
                _LEVEL_ELIGIBLE, _leak_at(VENOUS_SITES), d.LEVEL_FEATURES),
    OutcomeSpec("infection_90d", "procedure",
                "post-procedural infection (spondylodiscitis, surgical site) within 90 days",
                "procedures with complete 90-day follow-up (infection_90d not missing)",
                _infection, d.PROCEDURE_FEATURES, rare=True, risk_name="infection_risk"),
)
OUTCOMES_BY_NAME = {o.name: o for o in OUTCOMES}
