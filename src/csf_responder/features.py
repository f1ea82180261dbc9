"""Feature engineering as scikit-learn transformers, so it travels inside the model.

Both transformers take and return pandas DataFrames and give readable
``get_feature_names_out``; the model Pipeline starts from the raw wide cohort table
(:func:`csf_responder.cohort.cohort_table`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy import optimize, stats
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from csf_responder.cohort import BRIDGE_SUFFIX, FLAG_SUFFIX

__all__ = ["CENSORING_RULES", "BridgeNormalization", "CensoredValueImputer", "CohortFeatures",
           "PlateCentering", "fit_left_censored_normal"]

#: Value given to a concentration below the LLOQ, as a fraction of the LLOQ; the
#: ``censored_normal`` rule is fitted instead (see :class:`CensoredValueImputer`).
CENSORING_RULES = {"lloq_sqrt2": 1 / math.sqrt(2), "lloq_half": 0.5, "lloq": 1.0,
                   "censored_normal": None}
QUANTIFIED = ("observed", "extrapolated")


def fit_left_censored_normal(observed: np.ndarray, limits: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood normal (mean, sd) of data left-censored at per-value limits.

    Parameters
    ----------
    observed : ndarray
        Quantified values (e.g. log concentrations).
    limits : ndarray
        For each censored value, the limit it lies below (same scale).
    """
    start_sd = max(float(np.std(observed)), 1e-3) if observed.size > 1 else 1.0
    start = np.array([float(np.mean(observed)), math.log(start_sd)])

    def negative_log_likelihood(params: np.ndarray) -> float:
        mean, sd = params[0], math.exp(params[1])
        return -(stats.norm.logpdf(observed, mean, sd).sum()
                 + stats.norm.logcdf(limits, mean, sd).sum())

    result = optimize.minimize(negative_log_likelihood, start, method="Nelder-Mead",
                               options={"xatol": 1e-6, "fatol": 1e-8, "maxiter": 2000})
    return float(result.x[0]), float(math.exp(result.x[1]))

def _numbers(column: pd.Series) -> np.ndarray:
    """A column as float64 numpy values (non-numbers are NaN); no pandas per-op overhead."""
    if pd.api.types.is_float_dtype(column.dtype) and not isinstance(column.dtype,
                                                                      pd.ArrowDtype):
        return column.to_numpy(dtype="float64", copy=False)
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _text_storage(column: pd.Series) -> pa.ChunkedArray | None:
    """The Arrow storage of a text column (pandas ``str``), else None."""
    storage = getattr(column.array, "_pa_array", None)
    return storage if storage is not None and (pa.types.is_string(storage.type)
                                               or pa.types.is_large_string(storage.type)) else None


def _level_tests(column: pd.Series, levels: list) -> tuple[np.ndarray, list[np.ndarray]]:
    """(whether each value is one of ``levels``, whether it is each level) of a
    categorical column; missing values are none. Compared by Arrow when the column is
    Arrow text and the levels are text, else once per distinct value (no comparison of
    Python objects per row)."""
    storage = _text_storage(column)
    if storage is not None and all(isinstance(level, str) for level in levels):
        def flags(values) -> np.ndarray:
            return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False),
                              dtype=bool)

        return (flags(pc.is_in(storage, value_set=pa.array(levels, storage.type))),
                [flags(pc.equal(storage, pa.scalar(level, storage.type))) for level in levels])
    codes, uniques = pd.factorize(column)  # missing: -1; few distinct values

    def of_rows(per_value: list[bool]) -> np.ndarray:
        return np.append(np.asarray(per_value, dtype=bool), False)[codes]

    return (of_rows([u in levels for u in uniques]),
            [of_rows([u == level for u in uniques]) for level in levels])


def _flag_is(flag: pd.Series, name: str, *, blank: bool) -> np.ndarray:
    """Whether each row's flag is ``name`` (a blank flag: ``blank``). Arrow text is
    compared by Arrow itself (a tenth of the time of pandas' comparison of it)."""
    storage = _text_storage(flag)
    if storage is not None:
        equal = pc.fill_null(pc.equal(storage, pa.scalar(name, storage.type)), blank)
        return np.asarray(equal.to_numpy(zero_copy_only=False), dtype=bool)
    equal = flag.eq(name).to_numpy(dtype=bool, na_value=False)
    return equal | flag.isna().to_numpy() if blank else equal


def _as_frame(X) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise TypeError("expects the wide cohort table as a pandas DataFrame")
    return X


class CensoredValueImputer(TransformerMixin, BaseEstimator):
    """Replace censored CSF concentrations by a value derived from their limit.

    Every column ``c`` with a companion flag column ``c + "_flag"`` is a concentration.
    Where the flag is ``below``, the column holds the LLOQ and becomes
    ``LLOQ * factor`` (``lloq_sqrt2``: LLOQ/sqrt(2), the default; ``lloq_half``: LLOQ/2;
    ``lloq``: the LLOQ itself), or with ``censored_normal`` the expected value below the
    LLOQ under a log-normal fitted per column by maximum likelihood to the training rows
    (quantified values and censored limits; falls back to LLOQ/sqrt(2) for a column with
    fewer than 3 quantified or no censored values). ``above`` keeps the ULOQ; ``missing``
    becomes NaN, left for the Pipeline's imputer. Flag columns are dropped; other
    columns pass through.

    Parameters
    ----------
    rule : {"lloq_sqrt2", "lloq_half", "lloq", "censored_normal"}
        How a value below the LLOQ is replaced.

    Attributes
    ----------
    log_normal_ : dict
        With ``censored_normal``: fitted (mean, sd) of the log concentration per column.
    """

    def __init__(self, rule: str = "lloq_sqrt2"):
        self.rule = rule

    @property
    def stateless(self) -> bool:
        """True unless the rule is ``censored_normal``, the one rule fitted to the rows
        (see :func:`csf_responder.validation.stateless_prefix`)."""
        return self.rule != "censored_normal"

    def fit(self, X, y=None):
        X = _as_frame(X)
        if self.rule not in CENSORING_RULES:
            raise ValueError(f"rule must be one of {sorted(CENSORING_RULES)}, got {self.rule!r}")
        columns = [str(c) for c in X.columns]
        flags = {c for c in columns
                 if c.endswith(FLAG_SUFFIX) and c[: -len(FLAG_SUFFIX)] in columns}
        self.feature_names_in_ = np.asarray(columns, dtype=object)
        self.n_features_in_ = len(columns)
        self.value_columns_ = [c[: -len(FLAG_SUFFIX)] for c in columns if c in flags]
        self.output_columns_ = [c for c in columns if c not in flags]
        self.log_normal_ = {}
        if self.rule == "censored_normal":
            for column in self.value_columns_:
                flag = X[column + FLAG_SUFFIX].astype("string")
                value = pd.to_numeric(X[column], errors="coerce").astype("float64")
                quantified = value[flag.isin(QUANTIFIED).fillna(False) & (value > 0)]
                limits = value[flag.eq("below").fillna(False) & (value > 0)]
                if len(quantified) >= 3 and len(limits) > 0:
                    self.log_normal_[column] = fit_left_censored_normal(
                        np.log(quantified.to_numpy()), np.log(limits.to_numpy()))
        return self

    def _below(self, column: str, limit: pd.Series) -> pd.Series:
        """Replacement of values below ``limit`` (the LLOQ) in one column."""
        if column not in self.log_normal_:
            factor = CENSORING_RULES[self.rule] or CENSORING_RULES["lloq_sqrt2"]
            return limit * factor
        mean, sd = self.log_normal_[column]
        a = (np.log(limit) - mean) / sd
        # E[log X | log X < log LLOQ] for a normal; never above the limit itself
        expected = mean - sd * stats.norm.pdf(a) / np.maximum(stats.norm.cdf(a), 1e-300)
        return np.minimum(np.exp(expected), limit)

    def transform(self, X):
        check_is_fitted(self, "value_columns_")
        X = _as_frame(X)
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise ValueError(f"input is missing column(s) {', '.join(missing)}")
        replaced = {}
        for column in self.value_columns_:
            flag = X[column + FLAG_SUFFIX]
            value = _numbers(X[column]).copy()
            below = _flag_is(flag, "below", blank=False)
            if below.any():
                value[below] = np.asarray(self._below(column, pd.Series(value[below])))
            value[_flag_is(flag, "missing", blank=True)] = np.nan
            replaced[column] = value
        # the other columns as they are: as Series, not copied (copy on write); their
        # arrays alone (X[c].array) DataFrame copies, 6 ms per 50,000 rows
        out = {c: replaced[c] if c in replaced else X[c] for c in self.output_columns_}
        return pd.DataFrame(out, index=X.index)

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "output_columns_")
        return np.asarray(self.output_columns_, dtype=object)


class CohortFeatures(TransformerMixin, BaseEstimator):
    """Model features from the wide cohort table.

    Output columns, in order:

    - ``log_{analyte}_{timepoint}``: natural log of each concentration (canonical unit),
      at each of ``levels`` (all timepoints by default);
    - ``log_ratio_{num}_{den}_{timepoint}``: log of each configured ratio, e.g. the
      TGF-beta1/MCP-1 ratio, the candidate biomarker of Oh et al. 2018, at each of
      ``levels``;
    - with ``changes``: ``change_log_{analyte}`` and ``change_log_ratio_{num}_{den}``,
      last minus first timepoint (week4 vs baseline);
    - the clinical features asked for, by their wide-table column: numeric ones as they
      are (``age``, ``score_baseline``, ``leadin_slope`` in points/month, ...); a
      categorical covariate as one 1/0 indicator per level after its first (reference)
      level, ``{covariate}_{level}`` (``sex_male``, ``onset_site_bulbar``); and
      ``delta_fs``, the pre-slope: points lost from the best score to the baseline score
      per month since onset, ``|score_best - score_baseline| / onset_months``
      (ALSFRS-R: (48 - baseline) / months).

    Nothing is learned; a concentration <= 0 or missing gives NaN, so does an unknown
    category.

    Parameters
    ----------
    analytes : sequence of str
        Analyte column keys (``tgf_beta1``, ``mcp1``, ...).
    timepoints : sequence of str
        CSF timepoints, first = baseline.
    ratios : sequence of (str, str)
        (numerator, denominator) analyte keys.
    changes : bool
        Add the change between the first and last timepoint.
    clinical : sequence of str
        Clinical columns of the wide table, or ``delta_fs``.
    categories : sequence of (str, sequence of str)
        (covariate, levels) of the categorical covariates among ``clinical``; the first
        level is the reference.
    score_best : float, optional
        The best possible functional score (48 for ALSFRS-R, 0 for UMSARS); needed for
        ``delta_fs``.
    levels : sequence of str, optional
        Timepoints whose levels are output (default: all of ``timepoints``). With
        ``changes``, ``(baseline,)`` avoids the exact collinearity of baseline, last
        timepoint and their difference.
    """

    def __init__(
        self,
        analytes: Sequence[str] = (),
        timepoints: Sequence[str] = ("baseline",),
        ratios: Sequence[tuple[str, str]] = (),
        changes: bool = False,
        clinical: Sequence[str] = (),
        categories: Sequence[tuple[str, Sequence[str]]] = (),
        score_best: float | None = None,
        levels: Sequence[str] | None = None,
    ):
        self.analytes = analytes
        self.timepoints = timepoints
        self.ratios = ratios
        self.changes = changes
        self.clinical = clinical
        self.categories = categories
        self.score_best = score_best
        self.levels = levels

    #: Each output row comes from its input row alone and ``fit`` learns only column
    #: names: the step may run once before cross-validation without leakage (see
    #: :func:`csf_responder.validation.stateless_prefix`).
    stateless = True

    def _required_columns(self) -> list[str]:
        needed = [f"{a}_{tp}" for a in self.analytes for tp in self.timepoints]
        needed += [f"{k}_{tp}" for pair in self.ratios for k in pair for tp in self.timepoints]
        source = {"delta_fs": ("score_baseline", "onset_months")}
        for feature in self.clinical:
            needed += source.get(feature, (feature,))
        return list(dict.fromkeys(needed))

    def fit(self, X, y=None):
        X = _as_frame(X)
        if "delta_fs" in self.clinical and self.score_best is None:
            raise ValueError("delta_fs needs score_best, the best possible score")
        missing = [c for c in self._required_columns() if c not in X.columns]
        if missing:
            raise ValueError(f"input is missing column(s) {', '.join(missing)}")
        self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
        self.n_features_in_ = X.shape[1]
        self.feature_names_out_ = list(self._compute(X.head(0)).columns)
        return self

    def _compute(self, X: pd.DataFrame) -> pd.DataFrame:
        def log(column: str) -> np.ndarray:
            value = _numbers(X[column])
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(value > 0, np.log(np.where(value > 0, value, 1.0)), np.nan)

        out: dict[str, np.ndarray] = {}
        first, last = self.timepoints[0], self.timepoints[-1]
        levels = [tp for tp in self.timepoints if self.levels is None or tp in self.levels]

        def ratio(num: str, den: str, tp: str) -> np.ndarray:
            return log(f"{num}_{tp}") - log(f"{den}_{tp}")

        for a in self.analytes:
            for tp in levels:
                out[f"log_{a}_{tp}"] = log(f"{a}_{tp}")
        for num, den in self.ratios:
            for tp in levels:
                out[f"log_ratio_{num}_{den}_{tp}"] = ratio(num, den, tp)
        if self.changes and len(self.timepoints) > 1:
            for a in self.analytes:
                out[f"change_log_{a}"] = log(f"{a}_{last}") - log(f"{a}_{first}")
            for num, den in self.ratios:
                out[f"change_log_ratio_{num}_{den}"] = (ratio(num, den, last)
                                                         - ratio(num, den, first))
        levels = dict(self.categories)
        for feature in self.clinical:
            if feature == "delta_fs":
                months = _numbers(X["onset_months"])
                baseline = _numbers(X["score_baseline"])
                with np.errstate(divide="ignore", invalid="ignore"):
                    out["delta_fs"] = np.where(months > 0,
                                               np.abs(self.score_best - baseline) / months,
                                               np.nan)
            elif feature in levels:
                known, equal = _level_tests(X[feature], list(levels[feature]))
                for level, is_level in zip(levels[feature][1:], equal[1:], strict=True):
                    out[f"{feature}_{level}"] = np.where(known, is_level * 1.0, np.nan)
            else:
                out[feature] = _numbers(X[feature])
        return pd.DataFrame(out, index=X.index)

    def transform(self, X):
        check_is_fitted(self, "feature_names_out_")
        X = _as_frame(X)
        missing = [c for c in self._required_columns() if c not in X.columns]
        if missing:
            raise ValueError(f"input is missing column(s) {', '.join(missing)}")
        return self._compute(X)

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "feature_names_out_")
        return np.asarray(self.feature_names_out_, dtype=object)


class PlateCentering(TransformerMixin, BaseEstimator):
    """Per-plate median centring of concentrations on the log scale.

    For each concentration column ``{analyte}_{timepoint}`` with a ``plate_{timepoint}``
    column, ``fit`` learns, from the training rows' quantified values, each plate's
    median log concentration minus the median over all plates; ``transform`` divides
    every value of that plate (limits of censored values included) by
    ``exp(offset)``. A plate with fewer than ``min_per_plate`` quantified values, or one
    not seen in training, is left as it is. Being an estimator inside the Pipeline, it
    is fitted within each cross-validation fold.

    Parameters
    ----------
    timepoints : sequence of str
        Timepoints whose columns carry a plate.
    min_per_plate : int
        Fewest quantified values on a plate to estimate its offset.
    """

    def __init__(self, timepoints: Sequence[str] = ("baseline",), min_per_plate: int = 3):
        self.timepoints = timepoints
        self.min_per_plate = min_per_plate

    def _pairs(self, columns: Sequence[str]) -> list[tuple[str, str]]:
        """(value column, plate column) pairs present in ``columns``."""
        pairs = []
        for tp in self.timepoints:
            plate = f"plate_{tp}"
            if plate not in columns:
                continue
            for column in columns:
                if column.endswith(f"_{tp}") and column + FLAG_SUFFIX in columns:
                    pairs.append((column, plate))
        return pairs

    def fit(self, X, y=None):
        X = _as_frame(X)
        self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
        self.n_features_in_ = X.shape[1]
        self.offsets_: dict[str, dict[str, float]] = {}
        for column, plate in self._pairs(list(self.feature_names_in_)):
            flag = X[column + FLAG_SUFFIX].astype("string")
            value = pd.to_numeric(X[column], errors="coerce")
            ok = flag.isin(QUANTIFIED).fillna(False) & (value > 0)
            logs = np.log(value[ok])
            if logs.empty:
                continue
            by_plate = logs.groupby(X.loc[ok, plate].astype(str))
            medians = by_plate.median()[by_plate.size() >= self.min_per_plate]
            self.offsets_[column] = (medians - logs.median()).to_dict()
        return self

    def transform(self, X):
        check_is_fitted(self, "offsets_")
        X = _as_frame(X)
        out = X.copy()
        for column, offsets in self.offsets_.items():
            plate = self._plate_of(column)
            shift = X[plate].astype(str).map(offsets).fillna(0.0).astype("float64")
            value = pd.to_numeric(X[column], errors="coerce").astype("float64")
            out[column] = value / np.exp(shift)
        return out

    def _plate_of(self, column: str) -> str:
        return next(f"plate_{tp}" for tp in self.timepoints if column.endswith(f"_{tp}"))

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "offsets_")
        return self.feature_names_in_.copy()


class BridgeNormalization(TransformerMixin, BaseEstimator):
    """Bridging-sample normalisation of concentrations across assay plates.

    A bridging sample is the same reference material run on every plate; its measured
    value on a plate, relative to its usual level, is that plate's bias for the analyte.
    Every concentration column ``c`` with a companion ``c + "_bridge"`` (the bridging
    sample's value on the plate of that sample, from the wide cohort table) is scaled by
    ``reference / bridge``, limits of censored values included. ``fit`` learns the
    ``reference`` level per column: the geometric mean of the bridging values over the
    training rows' plates; rows whose plate has no bridging value are left as they are.
    Because the reference is learned in ``fit``, it is fitted inside each
    cross-validation fold and travels with the model to scoring, where a new cohort's
    plates are brought to the training level through their own bridging samples.
    Bridge columns are dropped from the output.

    Attributes
    ----------
    reference_ : dict
        Column -> reference bridging level (canonical unit).
    """

    def fit(self, X, y=None):
        X = _as_frame(X)
        columns = [str(c) for c in X.columns]
        self.feature_names_in_ = np.asarray(columns, dtype=object)
        self.n_features_in_ = len(columns)
        self.bridge_columns_ = [c for c in columns if c.endswith(BRIDGE_SUFFIX)
                                and c[: -len(BRIDGE_SUFFIX)] in columns]
        self.reference_ = {}
        for bridge in self.bridge_columns_:
            # one value per plate, not per patient: plates with many patients weigh no more
            plates = X[bridge][X[bridge] > 0].drop_duplicates()
            if len(plates):
                self.reference_[bridge[: -len(BRIDGE_SUFFIX)]] = float(
                    np.exp(np.log(plates).mean()))
        return self

    def transform(self, X):
        check_is_fitted(self, "reference_")
        X = _as_frame(X)
        out = X.drop(columns=[c for c in self.bridge_columns_ if c in X.columns])
        for column, reference in self.reference_.items():
            bridge = pd.to_numeric(X[column + BRIDGE_SUFFIX], errors="coerce")
            scale = (reference / bridge.where(bridge > 0)).fillna(1.0)
            out[column] = pd.to_numeric(X[column], errors="coerce").astype("float64") * scale
        return out

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "reference_")
        return np.asarray([c for c in self.feature_names_in_ if c not in self.bridge_columns_],
                          dtype=object)
