"""The feature dictionary: every model feature, its kind, unit, source columns and how missing values are handled.

This is data; ``features.matrices`` builds the columns, ``models.learners`` reads the kinds, and
``docs/features.md`` is rendered from it (:func:`render_markdown`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from records import schema as s

FeatureKind = Literal["numeric", "binary", "categorical"]


@dataclass(frozen=True)
class FeatureSpec:
    """One model feature."""

    name: str
    kind: FeatureKind
    unit: str
    sources: tuple[str, ...]
    description: str
    missing: str = "never missing (required in the contract)"
    categories: tuple[str, ...] = ()


UNKNOWN = "unknown"

# derived feature names (contract columns used as they are keep their contract name)
CEMENT_FILL_RATIO = "cement_fill_ratio"
VERTEBRAL_REGION = "vertebral_region"
LOG_FRACTURE_AGE = "log_fracture_age_days"
BASIVERTEBRAL = "basivertebral_foramen_seen"
IMAGING = "leakage_imaging_modality"
LEVELS_IN_PROCEDURE = "levels_in_procedure"

REGIONS = ("upper_thoracic", "thoracolumbar", "lumbar")
BASIVERTEBRAL_STATES = ("yes", "no", UNKNOWN)
IMAGING_STATES = ("xray", "ct")

_IMPUTED = "median-imputed with a missing-indicator in the logistic model; native missing-value split in boosting"

LEVEL_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(s.CEMENT_VOLUME_ML, "numeric", "ml", (s.CEMENT_VOLUME_ML,), "cement volume injected"),
    FeatureSpec(CEMENT_FILL_RATIO, "numeric", "ratio", (s.CEMENT_VOLUME_ML, s.VERTEBRAL_BODY_VOLUME_ML),
                "cement volume / vertebral body volume (CT segmentation)",
                "missing when the body volume was not measured: " + _IMPUTED),
    FeatureSpec(s.CEMENT_VISCOSITY, "categorical", "", (s.CEMENT_VISCOSITY,), "cement viscosity",
                categories=s.VISCOSITIES),
    FeatureSpec(s.CEMENT_TYPE, "categorical", "", (s.CEMENT_TYPE,), "cement type", categories=s.CEMENT_TYPES),
    FeatureSpec(s.MORPHOLOGY, "categorical", "", (s.MORPHOLOGY,), "fracture morphology",
                categories=s.MORPHOLOGIES),
    FeatureSpec(s.GENANT_GRADE, "numeric", "grade 0-3", (s.GENANT_GRADE,), "Genant semi-quantitative grade"),
    FeatureSpec(s.HEIGHT_LOSS_PCT, "numeric", "%", (s.HEIGHT_LOSS_PCT,), "vertebral height loss", _IMPUTED),
    FeatureSpec(s.CORTICAL_DISRUPTION, "binary", "", (s.CORTICAL_DISRUPTION,), "cortical wall breach"),
    FeatureSpec(s.ENDPLATE_DISRUPTION, "binary", "", (s.ENDPLATE_DISRUPTION,), "endplate disruption"),
    FeatureSpec(s.INTRAVERTEBRAL_CLEFT, "binary", "", (s.INTRAVERTEBRAL_CLEFT,), "intravertebral cleft"),
    FeatureSpec(BASIVERTEBRAL, "categorical", "", (s.BASIVERTEBRAL_FORAMEN,),
                "large basivertebral foramen on CT", "missing (no pre-procedural CT) is its own category "
                "'unknown'", categories=BASIVERTEBRAL_STATES),
    FeatureSpec(LOG_FRACTURE_AGE, "numeric", "log(1 + days)", (s.FRACTURE_AGE_DAYS,),
                "fracture age (pain onset to procedure)", _IMPUTED),
    FeatureSpec(VERTEBRAL_REGION, "categorical", "", (s.VERTEBRA,),
                "upper thoracic (T1-T10), thoracolumbar junction (T11-L2), lumbar (L3-L5)", categories=REGIONS),
    FeatureSpec(s.APPROACH, "categorical", "", (s.APPROACH,), "approach", categories=s.APPROACHES),
    FeatureSpec(LEVELS_IN_PROCEDURE, "numeric", "levels", (s.N_LEVELS,), "levels treated in the session"),
    FeatureSpec(s.ETIOLOGY, "categorical", "", (s.ETIOLOGY,), "fracture etiology", categories=s.ETIOLOGIES),
    FeatureSpec(s.BMD_T_SCORE, "numeric", "T-score", (s.BMD_T_SCORE,), "lowest DXA T-score", _IMPUTED),
    FeatureSpec(s.AGE_YEARS, "numeric", "years", (s.AGE_YEARS,), "age (90 = 90 or older)"),
    FeatureSpec(s.SEX, "categorical", "", (s.SEX,), "sex", categories=s.SEXES),
    FeatureSpec(IMAGING, "categorical", "", (s.LEAKAGE_IMAGING,),
                "how leakage was assessed: CT finds more leaks than radiographs, so the model conditions on it",
                "scoring a planned case without imaging uses 'ct' (the risk of a leak that CT would see)",
                categories=IMAGING_STATES),
)

PROCEDURE_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(s.AGE_YEARS, "numeric", "years", (s.AGE_YEARS,), "age (90 = 90 or older)"),
    FeatureSpec(s.SEX, "categorical", "", (s.SEX,), "sex", categories=s.SEXES),
    FeatureSpec(s.DIABETES, "binary", "", (s.DIABETES,), "diabetes"),
    FeatureSpec(s.GLUCOCORTICOID_USE, "binary", "", (s.GLUCOCORTICOID_USE,), "long-term systemic steroids"),
    FeatureSpec(s.IMMUNOSUPPRESSED, "binary", "", (s.IMMUNOSUPPRESSED,), "other immunosuppression"),
    FeatureSpec(s.RECENT_INFECTION, "binary", "", (s.RECENT_INFECTION,), "infection treated in the 90 days before"),
    FeatureSpec(s.ANTIBIOTIC_PROPHYLAXIS, "binary", "", (s.ANTIBIOTIC_PROPHYLAXIS,), "antibiotic prophylaxis"),
    FeatureSpec(s.ETIOLOGY, "categorical", "", (s.ETIOLOGY,), "fracture etiology", categories=s.ETIOLOGIES),
    FeatureSpec(LEVELS_IN_PROCEDURE, "numeric", "levels", (s.N_LEVELS,), "levels treated in the session"),
    FeatureSpec(s.ASA_CLASS, "numeric", "class 1-5", (s.ASA_CLASS,), "ASA physical status"),
)


def feature_names(specs: tuple[FeatureSpec, ...]) -> list[str]:
    return [f.name for f in specs]


def render_markdown() -> str:
    """The feature dictionary as a Markdown page (docs/features.md)."""
    lines = ["# Feature dictionary", "",
             "Generated from `features/dictionary.py` (`python -m features.dictionary > docs/features.md`).",
             "Site and operator are not features: they are what the QI report compares, so they stay out of "
             "the expected-risk models.", ""]
    for title, specs in (("Level models (one row per treated vertebra)", LEVEL_FEATURES),
                         ("Procedure models (one row per procedure)", PROCEDURE_FEATURES)):
        lines += [f"## {title}", "", "| feature | kind | unit | from | meaning | missing values |",
                  "|---|---|---|---|---|---|"]
        for f in specs:
            kind = f.kind + (f" ({', '.join(f.categories)})" if f.categories else "")
            lines.append(f"| `{f.name}` | {kind} | {f.unit} | {', '.join(f.sources)} | {f.description} | "
                         f"{f.missing} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_markdown(), end="")
