"""Typed, validated configuration.

The YAML files under ``configs/`` decide every value; this module only defines
what a valid configuration looks like. Models forbid unknown keys, so a typo is
an error that names the key, not a silently ignored setting.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from csf_responder.errors import ConfigError

__all__ = [
    "DERIVED_CLINICAL",
    "AnalyteSpec",
    "CovariateSpec",
    "EffectConfig",
    "ExecutionSpec",
    "IndicationSpec",
    "ScoreSpec",
    "SimulationConfig",
    "TrainConfig",
    "analyte_key",
    "analyte_match_key",
    "apply_overrides",
    "load_config",
    "load_yaml",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def analyte_match_key(name: str) -> str:
    """Key for matching analyte names, ignoring case, spaces and punctuation.

    ``"TGF-β1"``, ``"TGF beta 1"`` and ``"tgfbeta1"`` all give ``"tgfbeta1"``.
    """
    spelled = name.lower().replace("β", "beta").replace("α", "alpha").replace("γ", "gamma")
    return re.sub(r"[^0-9a-z]+", "", spelled)


def analyte_key(name: str) -> str:
    """Column-safe key of an analyte name: ``"TGF-beta1"`` -> ``"tgf_beta1"``."""
    key = re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")
    if not key:
        raise ValueError(f"analyte name {name!r} has no letters or digits")
    return key


# --------------------------------------------------------------------------- train
class AnalyteSpec(_Strict):
    """One analyte of a panel.

    ``name`` is the canonical name, ``unit`` the canonical unit every value is converted
    to, ``aliases`` other spellings labs use (matched ignoring case and punctuation),
    ``lloq``/``uloq`` the default limits in ``unit`` (a file's own limits win), and
    ``required`` whether a cohort without it cannot be used.
    """

    name: str
    unit: str
    required: bool
    key: str | None = None
    aliases: list[str] = Field(default_factory=list)
    lloq: float | None = Field(default=None, gt=0)
    uloq: float | None = Field(default=None, gt=0)

    @property
    def column_key(self) -> str:
        return self.key or analyte_key(self.name)


class CohortSpec(_Strict):
    path: str
    name: str
    simulated: bool = False  # the simulator's cohort: reports say the data are not real


class PanelSpec(_Strict):
    """An assay panel (``configs/panels/*.yaml``): analytes, timepoints, number format."""

    name: str
    analytes: list[AnalyteSpec] = Field(min_length=1)
    timepoints: list[str] = Field(min_length=1)
    decimal_comma: bool
    replicate_cv_max_percent: float = Field(gt=0)

    @model_validator(mode="after")
    def _names_are_unambiguous(self) -> PanelSpec:
        owner: dict[str, str] = {}
        for spec in self.analytes:
            for spelling in (spec.name, *spec.aliases):
                key = analyte_match_key(spelling)
                if owner.setdefault(key, spec.name) != spec.name:
                    raise ValueError(f"analyte spelling '{spelling}' of {spec.name} also names "
                                     f"{owner[key]}: ambiguous")
        keys = [spec.column_key for spec in self.analytes]
        if len(set(keys)) != len(keys):
            raise ValueError(f"analyte keys are not unique: {keys}")
        return self

    def analyte(self, name: str) -> AnalyteSpec:
        for spec in self.analytes:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def spellings(self) -> dict[str, AnalyteSpec]:
        """Match key of every name and alias -> its analyte."""
        return {analyte_match_key(s): spec for spec in self.analytes
                for s in (spec.name, *spec.aliases)}


class ScoreSpec(_Strict):
    """The functional score measured at every visit (ALSFRS-R for ALS, UMSARS for MSA).

    ``column`` is its column in the visits file; ``min``/``max`` its valid range (integer
    totals); ``higher_is_better`` its direction (true for ALSFRS-R, false for UMSARS,
    where the score rises as the disease progresses); ``items`` optional item columns
    that may accompany the total (kept out of the model, not reported as extra).
    """

    name: str
    column: str
    min: int
    max: int
    higher_is_better: bool
    items: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _range(self) -> ScoreSpec:
        if self.min >= self.max:
            raise ValueError(f"score range min {self.min} is not below max {self.max}")
        return self


class CovariateSpec(_Strict):
    """One clinical covariate of ``patients.csv``.

    A ``number`` has an optional valid range (``min``/``max``; ``min_exclusive`` makes
    the minimum itself invalid, as for months since onset). A ``category`` has its
    ``levels`` (the first is the reference level) and ``aliases`` other spellings
    (matched ignoring case) for a level. A blank cell is allowed (missing, imputed in
    the model Pipeline) unless ``required``.
    """

    type: Literal["number", "category"]
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    levels: list[str] = Field(default_factory=list)
    aliases: dict[str, str] = Field(default_factory=dict)
    required: bool = False

    @model_validator(mode="after")
    def _levels(self) -> CovariateSpec:
        if self.type == "category":
            if len(self.levels) < 2:
                raise ValueError("a category needs at least two levels")
            unknown = sorted(set(self.aliases.values()) - set(self.levels))
            if unknown:
                raise ValueError(f"aliases name unknown level(s) {unknown}")
        elif self.levels or self.aliases:
            raise ValueError("levels and aliases are for type: category")
        return self

    def spellings(self) -> dict[str, str]:
        """Lower-case spelling -> level, for levels and their aliases."""
        return {**{level.lower(): level for level in self.levels},
                **{alias.lower(): level for alias, level in self.aliases.items()}}


#: Clinical features computed from the visits rather than read from ``patients.csv``.
DERIVED_CLINICAL = ("score_baseline", "leadin_slope", "delta_fs")


class IndicationSpec(_Strict):
    """A disease indication (``configs/indications/*.yaml``): the visits file and its
    functional score, and the clinical covariates of ``patients.csv``."""

    name: str
    visits_file: str
    score: ScoreSpec
    covariates: dict[str, CovariateSpec]

    @model_validator(mode="after")
    def _names(self) -> IndicationSpec:
        taken = {"subject_id", "arm", *DERIVED_CLINICAL}
        clash = sorted(taken & set(self.covariates))
        if clash:
            raise ValueError(f"covariate name(s) {clash} are reserved")
        if not self.visits_file.endswith(".csv") or "/" in self.visits_file:
            raise ValueError(f"visits_file {self.visits_file!r} must be a .csv file name")
        return self


class IngestSpec(_Strict):
    """How cohort files are read and what makes a cohort unusable."""

    min_labelled: int = Field(ge=1)
    drop_columns: list[str]


class LabelSpec(_Strict):
    """How the responder label is made: ``source: slope`` derives it from the visits
    (slope improvement >= ``cutoff`` at ``horizon_months``); ``source: column`` reads a
    ready-made 0/1 label from ``patients.csv`` column ``column`` (for cohorts whose
    response is defined elsewhere; the slope settings still give the lead-in summary)."""

    source: Literal["slope", "column"]
    column: str | None = None
    cutoff: float = Field(gt=0, le=2)
    horizon_months: float = Field(gt=0)
    lead_in_days: int = Field(gt=0)
    min_visits_lead_in: int = Field(ge=2)
    min_visits_follow_up: int = Field(ge=2)
    horizon_tolerance_days: int = Field(ge=0)

    def slope_settings(self) -> dict[str, Any]:
        """Keyword arguments of :func:`csf_responder.labels.derive_labels`."""
        return self.model_dump(exclude={"source", "column"})

    @model_validator(mode="after")
    def _column_with_its_source(self) -> LabelSpec:
        if (self.source == "column") != (self.column is not None):
            raise ValueError("labels.column is set exactly when labels.source is 'column'")
        return self



class FeatureSpec(_Strict):
    """Model features: ``ratios`` are explicit (numerator, denominator) pairs;
    ``pairwise_ratios`` adds the log-ratio of every pair among the analytes it lists."""

    analytes: list[str] = Field(min_length=1)
    censoring: Literal["lloq_sqrt2", "lloq_half", "lloq", "censored_normal"]
    plate_correction: Literal["none", "median", "bridge"]
    ratios: list[tuple[str, str]]
    pairwise_ratios: list[str]
    changes: bool
    levels: list[str] | None = None
    clinical: list[str]

    def all_ratios(self) -> list[tuple[str, str]]:
        """Explicit ratios, then every pair of ``pairwise_ratios`` not already there
        (in either direction), in the listed order."""
        ratios = [tuple(pair) for pair in self.ratios]
        seen = {frozenset(pair) for pair in ratios}
        names = self.pairwise_ratios
        for i, num in enumerate(names):
            for den in names[i + 1:]:
                if frozenset((num, den)) not in seen:
                    ratios.append((num, den))
                    seen.add(frozenset((num, den)))
        return ratios


class ModelSpec(_Strict):
    """A model family (``configs/models/*.yaml``): fixed estimator ``params`` and the
    ``search`` grid (parameter -> candidate values) tuned inside each training fold."""

    family: Literal["logistic", "random_forest", "xgboost"]
    params: dict[str, Any]
    search: dict[str, list[Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _search_apart_from_params(self) -> ModelSpec:
        both = sorted(set(self.params) & set(self.search))
        if both:
            raise ValueError(f"{both} set both in params and in search")
        empty = sorted(name for name, values in self.search.items() if not values)
        if empty:
            raise ValueError(f"search {empty} has no candidate value")
        return self


class ValidationSpec(_Strict):
    n_splits: int = Field(ge=2)
    n_repeats: int = Field(ge=1)
    inner_splits: int = Field(ge=2)
    n_jobs: int = Field(ge=-1)
    n_bootstrap: int = Field(ge=100)
    ci_level: float = Field(gt=0, lt=1)
    threshold: float = Field(gt=0, lt=1)
    n_optimism: int = Field(ge=0)
    n_interval_models: int = Field(default=20, ge=0)
    permutation_test: bool
    n_permutations: int = Field(ge=1)


class TrackingSpec(_Strict):
    uri: str
    artifact_root: str
    experiment: str
    log_raw_rows: bool
    report_dir: str


class Bound(_Strict):
    """An interval a metric must lie in: ``above`` < value < ``below`` (either may be absent)."""

    above: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> Bound:
        if self.above is None and self.below is None:
            raise ValueError("give above, below or both")
        if self.above is not None and self.below is not None and self.above >= self.below:
            raise ValueError(f"above ({self.above}) must be less than below ({self.below})")
        return self


class RegistrySpec(_Strict):
    """The release gate: which family is registered, and when the alias moves to it."""

    model_name: str
    alias: str
    primary_metric: str                 # a child-run metric; higher is better
    thresholds: dict[str, Bound]        # child-run metric -> interval it must lie in


def _check_clinical(clinical: list[str], indication: IndicationSpec) -> None:
    known = [*DERIVED_CLINICAL, *indication.covariates]
    for name in clinical:
        if name not in known:
            raise ValueError(f"features.clinical names '{name}', which is neither a "
                             f"covariate of the indication nor derived (known: {known})")
    if "delta_fs" in clinical and "onset_months" not in indication.covariates:
        raise ValueError("features.clinical delta_fs needs the covariate onset_months")


class ExecutionSpec(_Strict):
    """Where the parallel work (outer folds, permutations, bootstrap resamples, T-learner
    folds) runs: ``local`` processes on this machine (joblib's default, ``n_jobs`` of
    each section), or ``dask``, the workers of a running ``dask.distributed`` scheduler at
    ``address`` (``tcp://host:port``; see :mod:`csf_responder.execution`). The numbers are
    the same on either backend."""

    backend: Literal["local", "dask"] = "local"
    address: str | None = None            # the scheduler, with backend: dask

    @model_validator(mode="after")
    def _address_for_dask(self) -> ExecutionSpec:
        if self.backend == "dask" and not self.address:
            raise ValueError("execution.backend dask needs execution.address, the "
                             "scheduler's tcp://host:port")
        if self.address is not None and not re.fullmatch(r"[a-z][a-z0-9+]*://\S+",
                                                         self.address):
            raise ValueError(f"execution.address {self.address!r} is not a scheduler "
                             "address such as tcp://127.0.0.1:8786")
        return self


class _CohortConfig(_Strict):
    """What every pipeline over a labelled cohort shares: the seed, the cohort, its
    indication and panel (each may be a path to a YAML file), ingest and labels, and
    where the parallel work runs (``execution``; local processes when absent)."""

    INCLUDES: ClassVar[tuple[str, ...]] = ("panel", "indication")

    seed: int
    cohort: CohortSpec
    indication: IndicationSpec
    panel: PanelSpec
    ingest: IngestSpec
    labels: LabelSpec
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec)


class TrainConfig(_CohortConfig):
    """Everything ``csf-responder train`` needs; see ``configs/train.yaml``."""

    #: Mappings whose values may each be a path to a YAML file (``models.xgboost``).
    INCLUDE_MAPS: ClassVar[tuple[str, ...]] = ("models",)

    features: FeatureSpec
    models: dict[str, ModelSpec] = Field(min_length=1)
    validation: ValidationSpec
    tracking: TrackingSpec
    registry: RegistrySpec

    @model_validator(mode="after")
    def _features_name_panel_analytes(self) -> TrainConfig:
        names = {a.name for a in self.panel.analytes}
        for name in self.features.analytes:
            if name not in names:
                raise ValueError(f"features.analytes names '{name}', which is not in the panel")
        for num, den in [*self.features.ratios,
                         *((name, name) for name in self.features.pairwise_ratios)]:
            for name in (num, den):
                if name not in self.features.analytes:
                    raise ValueError(f"features.ratios or pairwise_ratios names '{name}', "
                                     "which is not in features.analytes")
        for timepoint in self.features.levels or []:
            if timepoint not in self.panel.timepoints:
                raise ValueError(f"features.levels names timepoint '{timepoint}', which is not "
                                 f"in the panel (timepoints: {self.panel.timepoints})")
        _check_clinical(self.features.clinical, self.indication)
        if self.labels.column is not None and self.labels.column in self.indication.covariates:
            raise ValueError(f"labels.column '{self.labels.column}' is also a covariate")
        return self


# ------------------------------------------------------------------------ effect
class EffectFeatureSpec(_Strict):
    """Pre-treatment features of the effect analysis: the baseline log level of each of
    ``analytes``, the baseline log ratio of each of ``ratios``, and ``clinical``."""

    analytes: list[str]
    ratios: list[tuple[str, str]]
    clinical: list[str]
    censoring: Literal["lloq_sqrt2", "lloq_half", "lloq", "censored_normal"]
    plate_correction: Literal["none", "median", "bridge"]


class EffectSpec(_Strict):
    treated_arm: str
    control_arm: str
    outcome: Literal["slope", "change"]   # of the prognostic/predictive table and Qini
    n_folds: int = Field(ge=2)            # cross-fitting folds
    n_bootstrap: int = Field(ge=0)        # T-learner refits per fold for its intervals
    interval_level: float = Field(gt=0, lt=1)
    ci_level: float = Field(gt=0, lt=1)
    alpha: float = Field(gt=0, lt=1)
    n_groups: int = Field(ge=2)           # quantile groups of the benefit calibration
    n_qini_bootstrap: int = Field(ge=0)
    min_csf_controls: int = Field(ge=1)   # controls with baseline CSF to test CSF features
    min_csf_fraction: float = Field(gt=0, le=1)  # ... and the share of controls with it
    n_jobs: int = Field(ge=-1)


class EnrichmentSpec(_Strict):
    estimator: str                        # interaction, or a name under learners
    score: Literal["benefit", "responder_probability"]
    n_thresholds: int = Field(ge=2)
    n_trials: int = Field(ge=100)
    powers: list[float] = Field(min_length=1)
    alpha: float = Field(gt=0, lt=1)
    n_bootstrap: int = Field(ge=0)
    n_max_cap: int = Field(ge=10)


class LearningCurveSpec(_Strict):
    simulation: str                       # simulator config, relative to this file
    sizes: list[int]                      # treated patients per simulated study ([]: off)
    repeats: int = Field(ge=1)
    model: str                            # a model family under learners
    n_splits: int = Field(ge=2)


class EffectTrackingSpec(_Strict):
    uri: str
    artifact_root: str
    experiment: str
    report_dir: str


class EffectConfig(_CohortConfig):
    """Everything ``csf-responder effect`` needs; see ``configs/effect.yaml``."""

    INCLUDE_MAPS: ClassVar[tuple[str, ...]] = ("learners",)

    features: EffectFeatureSpec
    learners: dict[str, ModelSpec] = Field(min_length=1)
    effect: EffectSpec
    enrichment: EnrichmentSpec
    learning_curve: LearningCurveSpec
    tracking: EffectTrackingSpec

    @model_validator(mode="after")
    def _consistent(self) -> EffectConfig:
        names = {a.name for a in self.panel.analytes}
        for name in [*self.features.analytes, *(n for pair in self.features.ratios
                                                for n in pair)]:
            if name not in names:
                raise ValueError(f"features names analyte '{name}', which is not in the panel")
        for num, den in self.features.ratios:
            if num in self.features.analytes and den in self.features.analytes:
                raise ValueError(
                    f"features.ratios [{num}, {den}] with both analytes in features.analytes "
                    "is exactly collinear (log ratio = log numerator - log denominator): "
                    "keep at most one of the two levels")
        _check_clinical(self.features.clinical, self.indication)
        if self.effect.treated_arm == self.effect.control_arm:
            raise ValueError("effect.treated_arm and effect.control_arm must differ")
        if self.enrichment.estimator not in ("interaction", *self.learners):
            raise ValueError(f"enrichment.estimator '{self.enrichment.estimator}' is neither "
                             f"interaction nor a learner ({sorted(self.learners)})")
        if self.enrichment.score == "responder_probability" and \
                self.enrichment.estimator == "interaction":
            raise ValueError("enrichment.score responder_probability needs a learner as "
                             "enrichment.estimator (the interaction model has no responder "
                             "probability)")
        if self.learning_curve.model not in self.learners:
            raise ValueError(f"learning_curve.model '{self.learning_curve.model}' is not a "
                             f"learner ({sorted(self.learners)})")
        bad = [p for p in self.enrichment.powers if not 0 < p < 1]
        if bad:
            raise ValueError(f"enrichment.powers {bad} must lie between 0 and 1")
        return self


# ---------------------------------------------------------------------- simulate
#: Analytes the simulator's generating equations use, by name.
SIM_GENERATING_ANALYTES = ("TGF-beta1", "MCP-1", "VEGF")


class SimAnalyte(_Strict):
    """Generating distribution of one CSF analyte (log scale) and how the lab reports it.

    ``role`` is ``cohort`` (the default) for an analyte drawn with the cohort's other
    latents, which the generating equations may use (they name TGF-beta1, MCP-1 and
    VEGF), or ``noise`` for one that influences nothing: drawn from a random stream of its
    own, it leaves every other value of the cohort unchanged, and the oracle ignores it.
    """

    name: str
    role: Literal["cohort", "noise"] = "cohort"
    median_pg_ml: float = Field(gt=0)
    log_sd: float = Field(gt=0)
    reported_unit: str
    pg_ml_per_reported_unit: float = Field(gt=0)
    lloq: float = Field(gt=0, description="lower limit of quantification, reported unit")
    msc_log_change: float
    log_change_sd: float = Field(gt=0)
    assay_log_sd: float = Field(ge=0)


class SimDesign(_Strict):
    lead_in_visit_days: list[int]
    follow_up_visit_months: list[float]
    visit_jitter_days: int = Field(ge=0)
    csf_days: dict[str, int]
    csf_in_controls: bool
    dropout_by_last_visit: dict[Literal["MSC", "control"], float]


class SimClinical(_Strict):
    age_mean: float
    age_sd: float = Field(gt=0)
    age_range: tuple[float, float]
    p_male: float = Field(ge=0, le=1)
    p_bulbar: float = Field(ge=0, le=1)
    alsfrs_baseline_mean: float
    alsfrs_baseline_sd: float = Field(gt=0)
    alsfrs_baseline_range: tuple[float, float]


class SimProgression(_Strict):
    rate_median: float = Field(gt=0)
    rate_log_sd: float = Field(gt=0)
    mcp1_log_effect: float
    vegf_log_effect: float
    bulbar_log_effect: float
    follow_up_rate_multiplier: float = Field(gt=0)
    late_phase_start_months: float = Field(gt=0)
    late_rate_multiplier: float = Field(gt=0)
    period_drift_log_sd: float = Field(ge=0)
    visit_noise_sd: float = Field(gt=0)
    onset_rate_log_sd: float = Field(gt=0)


class SimBenefit(_Strict):
    """Treatment benefit: MSC prevent a fraction ``b`` of the decline. ``relative_to``
    says whose decline: the patient's own (``own_rate``: the benefit in points grows with
    the progression rate) or a typical patient's (``typical_rate``, at
    ``progression.rate_median``: the benefit in points depends on ``b`` alone, and
    progression is purely prognostic)."""

    max_fraction: float = Field(gt=0, le=1)
    intercept: float
    axis_slope: float
    axis_change_weight: float = Field(ge=0, le=1)
    noise_sd: float = Field(ge=0)
    late_fraction: float = Field(ge=0, le=1)
    relative_to: Literal["own_rate", "typical_rate"] = "own_rate"


class ScoringTrackingSpec(_Strict):
    uri: str
    artifact_root: str
    experiment: str


class ScoreConfig(_Strict):
    """Everything ``csf-responder score`` needs; see ``configs/score.yaml``. The input
    contract (panel, indication, lead-in) is the model's own, not configured here."""

    model: str = Field(min_length=1)      # MLflow model URI or local model directory
    out_dir: str                          # outputs go to <out_dir>/<cohort>-<date>/
    chunk_size: int = Field(ge=1)         # patients scored at a time (bounds memory)
    n_jobs: int = Field(ge=-1)            # processes scoring chunks (-1: one per core)
    n_reasons: int = Field(ge=1, le=10)
    drop_columns: list[str]
    tracking: ScoringTrackingSpec


class SimulationConfig(_Strict):
    """Everything ``csf-responder simulate`` needs; see ``configs/simulate.yaml``."""

    seed: int
    cohort_name: str
    n_msc: int = Field(ge=0)
    n_control: int = Field(ge=0)
    oracle_draws: int = Field(ge=100)
    oracle_cutoff: float = Field(gt=0)
    oracle_horizon_months: float = Field(gt=0)
    design: SimDesign
    clinical: SimClinical
    progression: SimProgression
    csf_tgf_mcp_correlation: float = Field(gt=-1, lt=1)
    analytes: list[SimAnalyte] = Field(min_length=1)
    benefit: SimBenefit

    @model_validator(mode="after")
    def _axis_analytes_present(self) -> SimulationConfig:
        names = [a.name for a in self.analytes]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"analytes {twice} are listed more than once")
        cohort = {a.name for a in self.analytes if a.role == "cohort"}
        missing = set(SIM_GENERATING_ANALYTES) - cohort
        if missing:
            raise ValueError(f"analytes must include {sorted(missing)} with role cohort "
                             "(the generating model uses them)")
        return self


# ------------------------------------------------------------------------ loading
ConfigT = TypeVar("ConfigT", bound=BaseModel)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read one YAML mapping, with a :class:`ConfigError` naming the file and line."""
    return _read_yaml(Path(path))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides; values are parsed as YAML (``5``, ``true``, ``[a, b]``).

    A key that is not in ``data`` is an error, so a mistyped override never passes unnoticed.
    """
    result = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {dotted}: value {raw!r} is not valid YAML") from None
        node = result
        for depth, key in enumerate(keys):
            if not isinstance(node, dict) or key not in node:
                known = ", ".join(sorted(node)) if isinstance(node, dict) else "none"
                where = ".".join(keys[: depth + 1])
                raise ConfigError(f"--set {dotted}: unknown key '{where}' (known here: {known})")
            if depth == len(keys) - 1:
                node[key] = value
            else:
                node = node[key]
    return result


def _holds(data: Any, loc: tuple) -> bool:
    for part in loc:
        found = (isinstance(data, dict) and part in data) or (
            isinstance(data, list) and isinstance(part, int) and part < len(data))
        if not found:
            return False
        data = data[part]
    return True


def _format_validation_error(path: Path, exc: ValidationError,
                             local: tuple[Path, dict[str, Any]] | None) -> str:
    """One line per file: each problem is reported against the file that set the key."""
    by_file: dict[Path, list[str]] = {}
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            problem = f"unknown key '{loc}'"
        elif err["type"] == "missing":
            problem = f"missing key '{loc}'"
        else:
            problem = f"key '{loc}': {err['msg']}"
        source = local[0] if local is not None and _holds(local[1], err["loc"]) else path
        by_file.setdefault(source, []).append(problem)
    return "; ".join(f"{file}: " + "; ".join(problems) for file, problems in by_file.items())


def _include_maps(data: dict[str, Any], model: type[BaseModel], root: Path) -> dict[str, Any]:
    """Read the YAML files named as values of ``model.INCLUDE_MAPS`` mappings."""
    for key in getattr(model, "INCLUDE_MAPS", ()):
        if isinstance(data.get(key), dict):
            data[key] = {name: _read_yaml(root / value) if isinstance(value, str) else value
                         for name, value in data[key].items()}
    return data


def load_config(
    path: str | Path,
    model: type[ConfigT],
    *,
    overrides: list[str] | None = None,
) -> tuple[ConfigT, dict[str, Any]]:
    """Load a YAML config, its git-ignored local override and ``--set`` overrides.

    The local override of ``configs/train.yaml`` is ``configs/train.local.yaml``; when
    present it is merged over the base file, key by key. A key of ``model.INCLUDES``
    (such as ``panel`` or ``indication``) may hold a path to another YAML file, relative
    to the config file; its content is included in place, before overrides apply.
    ``--set indication=indications/msa.yaml`` swaps an included file.

    Returns
    -------
    config : ConfigT
        The validated, frozen configuration.
    resolved : dict
        The merged mapping that was validated, for logging as the run's resolved config.
    """
    path = Path(path)
    includes = getattr(model, "INCLUDES", ())
    data = _read_yaml(path)
    local_path = path.with_name(f"{path.stem}.local{path.suffix}")
    local = (local_path, _read_yaml(local_path)) if local_path.exists() else None
    # an include swapped by --set (--set indication=indications/msa.yaml) is read first,
    # so that later --set keys can reach into it
    swaps = [item for item in overrides or [] if item.split("=", 1)[0].strip() in includes]
    for key, value in (item.split("=", 1) for item in swaps):
        data[key.strip()] = value.strip()
    for key in includes:
        if local is not None and isinstance(local[1].get(key), str):
            data[key] = local[1][key]
        if isinstance(data.get(key), str):  # a path, relative to the including file
            data[key] = _read_yaml(path.parent / data[key])
    if local is not None:
        data = _merge(data, {k: v for k, v in local[1].items()
                             if not (k in includes and isinstance(v, str))})
    data = _include_maps(data, model, path.parent)
    data = apply_overrides(data, [item for item in overrides or [] if item not in swaps])
    data = _include_maps(data, model, path.parent)  # paths set by --set models={...}
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc, local)) from None
    return config, data
