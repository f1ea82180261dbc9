"""Scoring new patients with a logged model: probability, interval, reasons, drift.

A logged model carries, next to the fitted Pipeline, what scoring needs to use it on a
new cohort (see :func:`training_profile`): the input contract it was trained under
(panel, indication, lead-in settings), its threshold, readable descriptions of its
features with their training ranges and tertiles, the training distribution of every
CSF value it uses (for drift) and of its feature matrix (for the multivariate
out-of-distribution flag), and bootstrap refits of the model (for the interval of each
probability). Everything here computes on tables; reading files, MLflow and writing
outputs belong to the callers.

Scoring a chunk of the wide cohort table (:meth:`Scorer.score`) runs the Pipeline's
stateless head once and every model's fitted tail on it; the final model's SHAP values
come from its own exact path (xgboost's ``pred_contribs``; for a linear model the
coefficients times the centred features, which is what SHAP's linear explainer computes
with the training rows as background).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from csf_responder.cohort import csf_columns

if TYPE_CHECKING:  # scikit-learn loads with the model (see tracking.import_model_loader)
    from sklearn.pipeline import Pipeline

__all__ = ["ChunkScores", "DriftAccumulator", "Scorer", "ScoringTally", "WORKER_IMPORTS",
           "check_accounting", "check_inputs", "contract_specs", "csf_rejects",
           "describe_feature", "empty_scores", "model_contract", "needed_columns", "psi",
           "score_chunk", "score_chunks", "score_columns", "scoring_pool", "training_profile"]

#: Format version of the profile written with each model.
PROFILE_VERSION = 1

#: Names of the files that travel with a logged model (MLflow ``extra_files``).
PROFILE_FILE = "scoring_profile.json"
INTERVAL_FILE = "interval_models.skops"

#: Most bins of the population stability index (training deciles); fewer with fewer
#: training values, at least :data:`PSI_MIN_PER_BIN` per bin: with 30 patients, ten bins
#: of three would make the index mostly sampling noise.
PSI_BINS = 10
PSI_MIN_PER_BIN = 6

#: Smallest bin fraction in the PSI (an empty bin would give an infinite index).
PSI_FLOOR = 1e-4

#: Most training values kept per column for the Kolmogorov-Smirnov statistic.
KS_POINTS = 2000


# --------------------------------------------------------------------------- features
def describe_feature(name: str, *, analytes: dict[str, tuple[str, str]],
                     covariates: dict[str, str], score_name: str,
                     timepoints: Sequence[str]) -> dict[str, str]:
    """How a model feature reads to a clinician: ``label``, ``unit`` and ``kind``.

    ``kind`` says how a value is shown: ``log`` (the feature is a natural log; shown as
    the concentration or ratio itself), ``fold`` (a log change; shown as the fold
    change), ``indicator`` (0/1 for a category level) or ``number``.

    Parameters
    ----------
    analytes : dict
        Analyte column key -> (name, unit).
    covariates : dict
        Numeric covariate -> unit.
    """
    first, last = timepoints[0], timepoints[-1]

    def ratio(rest: str) -> str | None:
        for num in analytes:
            for den in analytes:
                if rest == f"{num}_{den}" or rest.startswith(f"{num}_{den}_"):
                    return f"{analytes[num][0]}/{analytes[den][0]} ratio"
        return None

    for tp in timepoints:
        for key, (analyte, unit) in analytes.items():
            if name == f"log_{key}_{tp}":
                return {"label": f"{analyte} at {tp}", "unit": unit, "kind": "log"}
        if name.startswith("log_ratio_") and name.endswith(f"_{tp}"):
            found = ratio(name.removeprefix("log_ratio_").removesuffix(f"_{tp}"))
            if found:
                return {"label": f"{found} at {tp}", "unit": "", "kind": "log"}
    if name.startswith("change_log_ratio_"):
        found = ratio(name.removeprefix("change_log_ratio_"))
        if found:
            return {"label": f"change of the {found}, {last} vs {first}", "unit": "",
                    "kind": "fold"}
    if name.startswith("change_log_"):
        key = name.removeprefix("change_log_")
        if key in analytes:
            return {"label": f"change of {analytes[key][0]}, {last} vs {first}", "unit": "",
                    "kind": "fold"}
    fixed = {"score_baseline": (f"{score_name} at baseline", "points"),
             "leadin_slope": (f"{score_name} lead-in slope", "points/month"),
             "delta_fs": ("pre-slope (delta FS)", "points/month")}
    if name in fixed:
        return {"label": fixed[name][0], "unit": fixed[name][1], "kind": "number"}
    if name in covariates:
        return {"label": name.replace("_", " "), "unit": covariates[name], "kind": "number"}
    return {"label": name.replace("_", " ", 1).replace("_", " "), "unit": "",
            "kind": "indicator"}


def _display(kind: str, values: np.ndarray) -> np.ndarray:
    """Feature values as shown: concentrations and ratios unlogged, changes as folds."""
    with np.errstate(over="ignore"):
        return np.exp(values) if kind in ("log", "fold") else values


def _feature_step(pipeline: Pipeline) -> int | None:
    """Index of the step that makes the model features (``features``), if any."""
    names = [name for name, _ in pipeline.steps]
    return names.index("features") if "features" in names else None


def needed_columns(pipeline: Pipeline) -> list[str]:
    """The wide-table columns the model's features are computed from (``tgf_beta1_baseline``,
    ``age``, ...): what a cohort must provide for the model to mean anything."""
    step = _feature_step(pipeline)
    if step is None:
        return []
    return list(pipeline.steps[step][1]._required_columns())


# ---------------------------------------------------------------------------- profile
def model_contract(panel, indication, labels) -> dict[str, Any]:
    """The input contract a model is trained under, as JSON-ready data: the panel and
    indication specs and the lead-in settings that make its clinical inputs. Scoring a
    cohort reads it with exactly these (whatever the scoring machine's configs say)."""
    return {"panel": panel.model_dump(mode="json"),
            "indication": indication.model_dump(mode="json"),
            "lead_in": {"lead_in_days": labels.lead_in_days,
                        "baseline_tolerance_days": labels.horizon_tolerance_days,
                        "min_visits_lead_in": labels.min_visits_lead_in}}


def _ks_reference(values: np.ndarray) -> list[float]:
    values = np.sort(values[np.isfinite(values)])
    if len(values) > KS_POINTS:
        values = np.quantile(values, np.linspace(0, 1, KS_POINTS))
    return [float(v) for v in values]


def _psi_edges(values: np.ndarray) -> tuple[list[float], list[float]]:
    """Interior bin edges (training deciles, duplicates merged) and training fractions."""
    values = values[np.isfinite(values)]
    bins = int(np.clip(len(values) // PSI_MIN_PER_BIN, 2, PSI_BINS))
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, values, side="right"),
                         minlength=len(edges) + 1)
    return [float(e) for e in edges], [float(c) for c in counts / max(len(values), 1)]


def training_profile(model: Pipeline, X: pd.DataFrame, *, contract: dict[str, Any],
                     family: str, threshold: float, interval_level: float = 0.9,
                     n_interval_models: int = 0, trusted_types: Sequence[str] = ()
                     ) -> dict[str, Any]:
    """What scoring needs besides the fitted Pipeline, as JSON-ready data.

    Parameters
    ----------
    model : Pipeline
        The final model, fitted on ``X``.
    X : DataFrame
        Its training rows (raw wide table, the model's input).
    contract : dict
        The input contract the model was trained under: ``panel`` and ``indication``
        (their specs as dicts) and ``lead_in`` (``lead_in_days``,
        ``baseline_tolerance_days``, ``min_visits_lead_in``).
    family, threshold
        The model family and the probability from which a patient is called a responder.
    interval_level : float
        Coverage of the interval scoring reports (0.9: the 5th to 95th percentile of the
        bootstrap models' probabilities).
    trusted_types : sequence of str
        Types the saved interval models may hold (skops).
    """
    panel, indication = contract["panel"], contract["indication"]
    analytes = {a.get("key") or _key(a["name"]): (a["name"], a["unit"])
                for a in panel["analytes"]}
    covariates = {name: spec.get("unit") or "" for name, spec in
                  indication["covariates"].items() if spec["type"] == "number"}
    timepoints = list(panel["timepoints"])
    profile: dict[str, Any] = {
        "version": PROFILE_VERSION, "family": family, "threshold": float(threshold),
        "interval_level": float(interval_level), "n_interval_models": int(n_interval_models),
        "trusted_types": list(trusted_types), "contract": contract,
        "inputs": [str(c) for c in X.columns], "needed": needed_columns(model),
        "features": {}, "drift": {}, "ood": None, "n_training": len(X),
    }
    for column in profile["needed"]:
        if column in csf_columns(list(analytes), timepoints):
            values = pd.to_numeric(X[column], errors="coerce").to_numpy(dtype="float64")
            with np.errstate(divide="ignore", invalid="ignore"):
                logs = np.log(np.where(values > 0, values, np.nan))
            edges, fractions = _psi_edges(logs)
            profile["drift"][column] = {"edges": edges, "fractions": fractions,
                                        "ks_reference": _ks_reference(logs)}
    step = _feature_step(model)
    if step is None:
        return profile
    engineered = model[:step + 1].transform(X)
    for name in engineered.columns:
        values = engineered[name].to_numpy(dtype="float64")
        finite = values[np.isfinite(values)]
        info = describe_feature(name, analytes=analytes, covariates=covariates,
                                score_name=indication["score"]["name"],
                                timepoints=timepoints)
        shown = _display(info["kind"], finite)
        info.update({
            "min": float(finite.min()) if len(finite) else None,
            "max": float(finite.max()) if len(finite) else None,
            "tertiles": ([float(q) for q in np.quantile(shown, [1 / 3, 2 / 3])]
                         if len(finite) else None),
        })
        profile["features"][str(name)] = info
    matrix = model[:-1].transform(X).to_numpy(dtype="float64")
    profile["background_mean"] = [float(v) for v in matrix.mean(axis=0)]
    if matrix.shape[1] and len(matrix) > 2:
        from scipy.stats import chi2
        from sklearn.covariance import LedoitWolf

        fit = LedoitWolf().fit(matrix)
        precision = np.linalg.pinv(fit.covariance_)
        centred = matrix - fit.location_
        distances = np.einsum("ij,jk,ik->i", centred, precision, centred)
        cut = max(float(chi2.ppf(0.99, matrix.shape[1])), float(distances.max()))
        profile["ood"] = {"mean": [float(v) for v in fit.location_],
                          "precision": precision.tolist(), "threshold": cut}
    return profile


def _key(name: str) -> str:
    from csf_responder.config import analyte_key

    return analyte_key(name)


# ------------------------------------------------------------------- cohort vs model
def _csf_needed(profile: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Needed CSF value columns -> (analyte name, timepoint)."""
    panel = profile["contract"]["panel"]
    out = {}
    for analyte in panel["analytes"]:
        key = analyte.get("key") or _key(analyte["name"])
        for tp in panel["timepoints"]:
            if f"{key}_{tp}" in profile["needed"]:
                out[f"{key}_{tp}"] = (analyte["name"], tp)
    return out


def contract_specs(profile: dict[str, Any]):
    """The panel and indication a cohort to score is read with: the model's own, with no
    analyte required by the panel (what the model needs is checked by
    :func:`check_inputs`, which names analytes and timepoints; an analyte the model does
    not use may be absent)."""
    from csf_responder.config import IndicationSpec, PanelSpec

    panel = dict(profile["contract"]["panel"])
    panel["analytes"] = [{**a, "required": False} for a in panel["analytes"]]
    return (PanelSpec.model_validate(panel),
            IndicationSpec.model_validate(profile["contract"]["indication"]))


def check_inputs(table: pd.DataFrame, profile: dict[str, Any], *, file: str) -> list[str]:
    """Check a cohort's wide table against what the model needs; return notes.

    Raises
    ------
    CohortError
        Naming every analyte, or analyte at a timepoint, that the model uses and the
        cohort has no value of (``file``: the CSF file, for the message).
    """
    from csf_responder.errors import CohortError

    needed = _csf_needed(profile)
    empty = [column for column in needed if column not in table
             or pd.to_numeric(table[column], errors="coerce").isna().all()]
    if empty and len(table):
        by_analyte: dict[str, list[str]] = {}
        for column in empty:
            analyte, tp = needed[column]
            by_analyte.setdefault(analyte, []).append(tp)
        timepoints = {tp for _, tp in needed.values()}
        parts = [f"{analyte} (no value at any timepoint)" if set(tps) >= timepoints
                 else f"{analyte} at {', '.join(tps)}" for analyte, tps in by_analyte.items()]
        raise CohortError("the model needs CSF values the cohort does not have: "
                          + "; ".join(parts), file=file)
    used = {analyte for analyte, _ in needed.values()}
    panel = profile["contract"]["panel"]
    present = []
    for analyte in panel["analytes"]:
        key = analyte.get("key") or _key(analyte["name"])
        columns = [f"{key}_{tp}" for tp in panel["timepoints"] if f"{key}_{tp}" in table]
        if analyte["name"] not in used and any(
                pd.to_numeric(table[c], errors="coerce").notna().any() for c in columns):
            present.append(analyte["name"])
    return ([f"{file}: {', '.join(present)} not used by the model: ignored"]
            if present else [])


def csf_rejects(table: pd.DataFrame, profile: dict[str, Any]) -> pd.Series:
    """Patients with no value at all of the CSF the model uses: ``no_csf`` (they would be
    scored on imputed medians only). A boolean Series over ``table``'s rows."""
    needed = [c for c in _csf_needed(profile) if c in table]
    if not needed:
        return pd.Series(False, index=table.index)
    values = table[needed].apply(pd.to_numeric, errors="coerce")
    return values.isna().all(axis=1)


# ---------------------------------------------------------------------------- scoring
def _shap_contributions(classifier, matrix: np.ndarray, background_mean: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """SHAP values (log-odds) of the final classifier on its feature matrix, by the
    classifier's own exact path, and each row's base value (the log-odds they add to)."""
    module = type(classifier).__module__
    if module.startswith("xgboost"):
        from xgboost import DMatrix

        booster = classifier.get_booster()
        contributions = booster.predict(DMatrix(matrix, missing=np.nan), pred_contribs=True,
                                        validate_features=False)
        return contributions[:, :-1], contributions[:, -1]
    if hasattr(classifier, "coef_") and np.ndim(classifier.coef_) == 2:
        coef = classifier.coef_[0]
        base = float(classifier.intercept_[0] + coef @ background_mean)
        return (matrix - background_mean) * coef, np.full(len(matrix), base)
    import shap  # a tree ensemble of scikit-learn's, say: its exact TreeSHAP

    explanation = shap.TreeExplainer(classifier)(matrix, check_additivity=False)
    values, base = np.asarray(explanation.values), np.asarray(explanation.base_values)
    if values.ndim == 3:
        values, base = values[:, :, 1], base[:, 1]
    return values, np.broadcast_to(base, (len(matrix),))


def _as_matrix(frame) -> np.ndarray:
    """A Pipeline step's output as a float64 matrix (a view when it already is one)."""
    return frame.to_numpy(dtype="float64") if hasattr(frame, "to_numpy") else np.asarray(
        frame, dtype="float64")


def _before_classifier(pipeline: Pipeline, start: int, X):
    """``X`` (the output of the Pipeline's first ``start`` steps) through the rest of its
    steps but the classifier; ``X`` itself when there are none."""
    return pipeline[start:-1].transform(X) if start < len(pipeline) - 1 else X


def _numpy_ready(step) -> bool:
    """Whether :func:`_numpy_step` reproduces ``step``'s transform: a fitted
    :class:`~sklearn.impute.SimpleImputer` of NaN without indicator columns, or a fitted
    :class:`~sklearn.preprocessing.StandardScaler`."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    if type(step) is SimpleImputer:
        missing = step.missing_values
        return (not step.add_indicator and isinstance(missing, float) and np.isnan(missing)
                and hasattr(step, "statistics_")
                and not np.isnan(step.statistics_.astype("float64")).any())
    return type(step) is StandardScaler and hasattr(step, "scale_")


def _numpy_step(step, matrix: np.ndarray, *, missing: np.ndarray | None = None,
                owned: bool = False) -> np.ndarray:
    """A step :func:`_numpy_ready` accepts, applied to ``matrix`` in numpy: the same
    arithmetic as its ``transform`` (the same numbers, bit for bit), without
    scikit-learn's per-call validation and DataFrame output, which cost more than the
    arithmetic itself on large chunks. ``missing``: ``np.isnan(matrix)``, if known;
    ``owned``: ``matrix`` is a temporary the step may overwrite."""
    if hasattr(step, "statistics_"):  # the imputer
        return np.where(np.isnan(matrix) if missing is None else missing,
                        step.statistics_.astype("float64"), matrix)
    out = matrix if owned else matrix.copy()
    if step.with_mean:
        out -= step.mean_
    if step.with_std:
        out /= step.scale_
    return out


def _tail_matrix(pipeline: Pipeline, start: int, frame, matrix: np.ndarray | None = None,
                 missing: np.ndarray | None = None):
    """What the classifier of ``pipeline`` takes for ``frame`` (the output of its first
    ``start`` steps): the remaining steps in numpy when :func:`_numpy_ready` accepts them
    all (``matrix``: ``frame`` as float64, if made already, and ``missing`` its NaN
    mask: the 20 interval models share them), else through the steps themselves."""
    tail = [step for _, step in pipeline.steps[start:-1]]
    if not tail:
        return frame
    if not all(_numpy_ready(step) for step in tail):
        return _before_classifier(pipeline, start, frame)
    current = _as_matrix(frame) if matrix is None else matrix
    for k, step in enumerate(tail):
        current = _numpy_step(step, current, missing=missing if k == 0 else None,
                              owned=k > 0)  # a later step's input is an earlier's output
    return current


def _predict(classifier, frame) -> np.ndarray:
    """The classifier's probability of the positive class for the rows of ``frame`` (the
    output of the Pipeline's steps before it).

    An xgboost model gets the rows as one float64 matrix (its fastest input; the values
    it compares are the same); any other classifier gets ``frame`` as it is, with the
    feature names it was fitted with.
    """
    if hasattr(classifier, "get_booster"):
        frame = _as_matrix(frame)
    elif isinstance(frame, np.ndarray) and hasattr(classifier, "feature_names_in_"):
        frame = pd.DataFrame(frame, columns=classifier.feature_names_in_, copy=False)
    return np.asarray(classifier.predict_proba(frame))[:, 1]


def _largest(size: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest values of each row, largest first, ties in
    column order: ``np.argsort(-size, axis=1, kind="stable")[:, :k]``. Of sizes (none
    negative, none NaN), by ``k`` passes of ``argmax`` rather than a sort of each row;
    of anything else, by that sort."""
    if k > size.shape[1] or not (size >= 0).all():
        return np.argsort(-size, axis=1, kind="stable")[:, :k]
    size = size.copy()
    rows = np.arange(len(size))
    order = np.empty((len(size), k), dtype=np.intp)
    for r in range(k):
        order[:, r] = np.argmax(size, axis=1)  # the first of equal values
        size[rows, order[:, r]] = -1.0  # below every size left
    return order


def _text_column(texts: Sequence[str], codes: np.ndarray) -> pd.Series:
    """``texts[codes]`` as a pandas ``str`` column, built in Arrow (what a column of
    Python strings becomes in a DataFrame, without a pass over Python objects); without
    rows, an ``object`` column (as an empty one of Python strings becomes)."""
    import pyarrow as pa

    from csf_responder.readers import take_text

    if not len(codes):
        return pd.Series(np.array([], dtype=object), dtype=object)
    return take_text(pa.array(list(texts), pa.large_string()), codes)


def _arrow_column(array) -> pd.Series:
    """Arrow text as a pandas ``str`` column (see :func:`_text_column`)."""
    import pyarrow as pa

    chunked = array if isinstance(array, pa.ChunkedArray) else pa.chunked_array([array])
    return chunked.cast(pa.large_string()).to_pandas()


#: How a contribution moves the chance of response, by :func:`_effect_codes`.
EFFECTS = ("raises the chance", "lowers the chance", "does not change the chance")


def _effect_codes(contribution: np.ndarray) -> np.ndarray:
    """Index into :data:`EFFECTS` of each contribution: positive raises, zero does not
    change, anything else (negative) lowers the chance."""
    codes = np.where(contribution > 0, 0, 1)
    codes[contribution == 0] = 2
    return codes


def _spelled(mantissa: int, exponent: int) -> str:
    """``f"{mantissa * 10 ** (exponent - 2):.3g}"`` for a mantissa of three digits
    (with its sign), written from the digits themselves."""
    digits, sign = str(abs(mantissa)), "-" if mantissa < 0 else ""
    if -4 <= exponent < 3:  # where .3g writes the number in full, as .3g writes it
        whole, fraction = ((digits[:exponent + 1], digits[exponent + 1:]) if exponent >= 0
                           else ("0", "0" * (-exponent - 1) + digits))
        fraction = fraction.rstrip("0")
        return sign + whole + ("." + fraction if fraction else "")
    fraction = digits[1:].rstrip("0")
    return f"{sign}{digits[0]}{'.' + fraction if fraction else ''}e{exponent:+03d}"


def _formatted(values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Three significant digits, as text: ``f"{value:.3g}"`` (NaN: ``missing``), as
    distinct texts and each value's index into them (:func:`_format` takes them).

    A chunk's 50,000 values round to a few thousand distinct three-digit numbers, so
    the rounding is done in numpy and each distinct number is written once. A value
    whose scaled mantissa lies within 1e-9 of half a unit (where the float arithmetic,
    off by 1e-13 at most, could round the other way from Python's exact decimal
    rounding), zero, and values beyond 1e+-300 are written by Python itself.
    """
    values = np.asarray(values, dtype="float64")
    size = np.abs(values)
    finite = np.isfinite(values)
    usual = finite & (size > 1e-300) & (size < 1e300)
    size = np.where(usual, size, 1.0)
    exponent = np.floor(np.log10(size)).astype(np.int64)  # of the leading digit
    scaled = size * 10.0 ** (2 - exponent)
    exponent += (scaled >= 1000).astype(np.int64) - (scaled < 100)  # log10 off by one
    scaled = size * 10.0 ** (2 - exponent)  # in [100, 1000)
    usual &= np.abs(scaled - np.floor(scaled) - 0.5) > 1e-9
    mantissa = np.rint(scaled)
    carry = mantissa >= 1000  # 999.5 -> 1.00e+03
    exponent += carry
    mantissa = np.where(carry, 100, mantissa).astype(np.int64)
    key = np.where(values < 0, -mantissa, mantissa) * 2048 + (exponent + 1024)
    codes = np.zeros(len(values), dtype=np.intp)  # 0: missing
    texts = ["missing"]
    if usual.any():
        inverse, distinct = pd.factorize(key[usual])  # hashed: no sort
        texts += [_spelled(k // 2048, k % 2048 - 1024) for k in distinct.tolist()]
        codes[usual] = inverse + 1
    rest = np.flatnonzero(finite & ~usual)
    codes[rest] = np.arange(len(texts), len(texts) + len(rest))
    texts += [f"{value:.3g}" for value in values[rest].tolist()]
    return texts, codes


def _format(values: np.ndarray) -> np.ndarray:
    """Three significant digits, as text (NaN: ``missing``): :func:`_formatted` as an
    array of Python strings."""
    texts, codes = _formatted(values)
    return np.array(texts, dtype=object)[codes]


#: How a value reads, by code: its level among the training tertiles (``typical``,
#: ``low``, ``high``), ``yes``/``no`` for an indicator, or missing.
LEVELS = ("typical", "low", "high", "missing (imputed)", "yes", "no")


def _sentences(info: Sequence[dict[str, Any]], which: np.ndarray, shown: np.ndarray,
               contribution: np.ndarray):
    """Each row's reason in words, its feature ``info[which]``: "TGF-beta1/MCP-1 ratio at
    baseline 0.42, low: lowers the chance" (the value shown with its unit, ``x`` before
    a fold change, and its level among the training tertiles); "sex male: yes: raises
    the chance" for an indicator.

    A sentence is the words before its value, the value, and the words after; the words
    depend only on the feature, the level and the effect, so they are written once for
    each of those few combinations and taken by Arrow for all rows (no Python string per
    row but the value's three digits)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    indicator = np.array([i["kind"] == "indicator" for i in info])
    tertiles = np.array([i.get("tertiles") or (np.nan, np.nan) for i in info], dtype=float)
    on_indicator = indicator[which]
    code = np.zeros(len(shown), dtype=np.int64)  # typical
    with np.errstate(invalid="ignore"):
        code[shown < tertiles[which, 0]] = 1
        code[shown > tertiles[which, 1]] = 2
        code[on_indicator] = np.where(shown[on_indicator] >= 0.5, 4, 5)
    code[~np.isfinite(shown)] = 3
    before, after = [], []  # by (feature, level, effect)
    for i in info:
        for level in LEVELS:
            for effect in EFFECTS:
                if i["kind"] == "indicator":
                    before.append(f"{i['label']}: {level}: {effect}")
                    after.append("")
                else:
                    before.append(f"{i['label']} {'x' if i['kind'] == 'fold' else ''}")
                    after.append(f"{' ' + i['unit'] if i['unit'] else ''}, {level}: {effect}")
    words = pa.array((which * len(LEVELS) + code) * len(EFFECTS)
                     + _effect_codes(contribution))
    texts, shown_as = _formatted(shown)
    shown_as[on_indicator] = len(texts)  # an indicator's words say its value: ""
    text = pa.large_string()
    return pc.binary_join_element_wise(pa.array(before, text).take(words),
                                       pa.array([*texts, ""], text).take(pa.array(shown_as)),
                                       pa.array(after, text).take(words), pa.scalar("", text))


@dataclass
class Scorer:
    """Scores chunks of a wide cohort table with a model and what travels with it.

    Parameters
    ----------
    model : Pipeline
        The fitted final model.
    profile : dict
        Its :func:`training_profile`.
    interval_models : sequence of Pipeline
        Bootstrap refits of the model (may be empty: no interval then).
    n_reasons : int
        Reasons given per patient.
    """

    model: Pipeline
    profile: dict[str, Any]
    interval_models: Sequence[Pipeline] = ()
    n_reasons: int = 3
    _head: int = field(init=False, default=0)
    _threads: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        import os

        from csf_responder.validation import stateless_prefix

        # fitted on one core per fold; predicting, use them all (unless told otherwise)
        self.use_threads(os.cpu_count() or 1)
        self._head = stateless_prefix(self.model)
        self._features = list(self.profile["features"])
        self._info = [self.profile["features"][name] for name in self._features]

    def use_threads(self, n: int) -> None:
        """Threads each model's prediction may use (xgboost's ``n_jobs``)."""
        if n == self._threads:  # as set already (set_params on 21 models: 2 ms a chunk)
            return
        for model in [self.model, *self.interval_models]:
            if hasattr(model[-1], "get_booster"):
                model[-1].set_params(n_jobs=n)
        self._threads = n

    def score(self, table: pd.DataFrame) -> pd.DataFrame:
        """One row per row of ``table``: the columns described in docs/scoring.md."""
        X = table[self.profile["inputs"]]
        head = self.model[:self._head].transform(X) if self._head else X
        # the fitted tail of every model (the final one's and its refits') runs on the
        # head's output as one float matrix, its NaN found once (see _tail_matrix)
        ready = all(_numpy_ready(step) for _, step in self.model.steps[self._head:-1])
        base = _as_matrix(head) if ready and self._head < len(self.model) - 1 else None
        missing = np.isnan(base) if base is not None else None
        final = _tail_matrix(self.model, self._head, head, base, missing)
        probability = _predict(self.model[-1], final).astype("float64")
        from csf_responder.readers import arrow_text

        out = pd.DataFrame({"subject_id": _arrow_column(arrow_text(table["subject_id"])),
                            "probability": probability})  # ids: str, their Arrow kept
        level = self.profile["interval_level"]
        if len(self.interval_models):
            spread = np.column_stack([
                _predict(m[-1], _tail_matrix(m, self._head, head, base, missing))
                for m in self.interval_models])
            tail = (1 - level) / 2
            low, high = np.quantile(spread, [tail, 1 - tail], axis=1)
            out["probability_low"], out["probability_high"] = low, high
        else:
            out["probability_low"] = out["probability_high"] = np.nan
        out["predicted_responder"] = (probability >= self.profile["threshold"]).astype("int8")
        step = _feature_step(self.model)
        if step is None:
            return self._without_features(out)
        if step + 1 == self._head:  # the final model's tail ran on the features already
            frame, matrix = head, _as_matrix(final)
        else:
            frame = self.model[:step + 1].transform(X)
            matrix = _as_matrix(self.model[step + 1:-1].transform(frame))
        engineered = frame.to_numpy(dtype="float64")
        contributions, _ = _shap_contributions(
            self.model[-1], matrix, np.asarray(self.profile["background_mean"]))
        out = pd.concat([out, self._reasons(engineered, contributions)], axis=1)
        out["n_imputed"] = np.isnan(engineered).sum(axis=1).astype("int16")
        return pd.concat([out, self._ood(engineered, matrix)], axis=1)

    def explain(self, table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
        """SHAP values of the final model for the rows of ``table`` (one column per
        feature), each feature's value as a clinician reads it ("TGF-beta1 at baseline
        412 pg/mL"), and each row's base value (log-odds)."""
        step = _feature_step(self.model)
        if step is None:
            raise ValueError("the model has no features to explain")
        X = table[self.profile["inputs"]]
        frame = self.model[:step + 1].transform(X)
        matrix = self.model[step + 1:-1].transform(frame).to_numpy(dtype="float64")
        values, base = _shap_contributions(self.model[-1], matrix,
                                           np.asarray(self.profile["background_mean"]))
        engineered = frame.to_numpy(dtype="float64")
        shown = {}
        for j, (name, info) in enumerate(zip(self._features, self._info, strict=True)):
            value = _display(info["kind"], engineered[:, j])
            if info["kind"] == "indicator":
                text = np.where(value >= 0.5, "yes", "no").astype(object)
            else:
                unit = f" {info['unit']}" if info["unit"] else ""
                text = ("x" if info["kind"] == "fold" else "") + _format(value) + unit
            text[~np.isfinite(value)] = "missing"
            shown[name] = info["label"] + " " + text
        return (pd.DataFrame(values, columns=self._features, index=table.index),
                pd.DataFrame(shown, index=table.index), base)

    def _without_features(self, out: pd.DataFrame) -> pd.DataFrame:
        n = len(out)
        for r in range(1, self.n_reasons + 1):
            out[f"reason_{r}"] = ""
            out[f"reason_{r}_feature"] = ""
            out[f"reason_{r}_value"] = np.nan
            out[f"reason_{r}_shap"] = np.nan
        out["n_imputed"] = np.zeros(n, dtype="int16")
        out["ood_range"] = False
        out["ood_range_features"] = ""
        out["ood_distance"] = np.nan
        out["ood_multivariate"] = False
        return out

    def _reasons(self, engineered: np.ndarray, contributions: np.ndarray) -> pd.DataFrame:
        """The ``n_reasons`` largest |SHAP| per patient, as data and in words."""
        n, p = contributions.shape
        k = min(self.n_reasons, p)
        order = _largest(np.abs(contributions), k)
        rows = np.arange(n)[:, None]
        chosen_shap = contributions[rows, order]
        chosen_value = engineered[rows, order]
        logged = np.array([i["kind"] in ("log", "fold") for i in self._info])
        columns: dict[str, Any] = {}
        for r in range(self.n_reasons):
            shown = np.full(n, np.nan)
            contribution = np.full(n, np.nan)
            if r < k:
                which, contribution = order[:, r], chosen_shap[:, r]
                with np.errstate(over="ignore"):  # as _display shows each kind
                    shown = np.where(logged[which], np.exp(chosen_value[:, r]),
                                     chosen_value[:, r])
                text = _arrow_column(_sentences(self._info, which, shown, contribution))
                feature = _text_column(self._features, which)
            else:
                text = feature = _text_column([""], np.zeros(n, dtype=np.int64))
            columns[f"reason_{r + 1}"] = text
            columns[f"reason_{r + 1}_feature"] = feature
            columns[f"reason_{r + 1}_value"] = shown
            columns[f"reason_{r + 1}_shap"] = contribution
        return pd.DataFrame(columns, copy=False)

    def _ood(self, engineered: np.ndarray, matrix: np.ndarray) -> pd.DataFrame:
        """Out-of-distribution flags: a feature outside its training range (which ones),
        and a Mahalanobis distance beyond the training cloud's."""
        lows = np.array([np.nan if i["min"] is None else i["min"] for i in self._info])
        highs = np.array([np.nan if i["max"] is None else i["max"] for i in self._info])
        with np.errstate(invalid="ignore"):
            outside = (engineered < lows) | (engineered > highs)
        listed = _listed(outside, self._features)
        ood = self.profile["ood"]
        if ood is None:
            distance = np.full(len(matrix), np.nan)
            far = np.zeros(len(matrix), dtype=bool)
        else:
            centred = matrix - np.asarray(ood["mean"])
            distance = np.einsum("ij,jk,ik->i", centred, np.asarray(ood["precision"]),
                                 centred)
            far = distance > ood["threshold"]
        return pd.DataFrame({"ood_range": outside.any(axis=1), "ood_range_features": listed,
                             "ood_distance": distance, "ood_multivariate": far})


def _listed(flags: np.ndarray, names: Sequence[str]) -> pd.Series:
    """Each row's names whose flag is set, joined by ``;`` in the order of ``names``
    ("" for none), as a ``str`` column. Rows share a few patterns of flags: each
    pattern is found by hashing (its flags as the bits of one integer; sorting the
    packed rows, with more than 62 names) and written once."""
    p = flags.shape[1]
    if p <= 62:
        codes, bits = pd.factorize(flags.astype(np.int64)
                                   @ (np.int64(1) << np.arange(p, dtype=np.int64)))
        patterns = (bits[:, None] >> np.arange(p)) & 1
    else:
        packed, codes = np.unique(np.packbits(flags, axis=1, bitorder="little"), axis=0,
                                  return_inverse=True)
        patterns = np.unpackbits(packed, axis=1, count=p, bitorder="little")
    texts = [";".join(name for name, set_ in zip(names, row, strict=True) if set_)
             for row in patterns.astype(bool).tolist()]
    return _text_column(texts, np.asarray(codes, dtype=np.int64).ravel())


def score_columns(n_reasons: int = 3) -> list[str]:
    """The columns of a scores table, in order (see :meth:`Scorer.score`)."""
    reasons = [f"reason_{r}{suffix}" for r in range(1, n_reasons + 1)
               for suffix in ("", "_feature", "_value", "_shap")]
    return ["subject_id", "probability", "probability_low", "probability_high",
            "predicted_responder", *reasons, "n_imputed", "ood_range", "ood_range_features",
            "ood_distance", "ood_multivariate"]


def empty_scores(n_reasons: int = 3) -> pd.DataFrame:
    """A scores table without rows, with every column's type (for a cohort where no
    patient could be scored)."""
    kinds = {"subject_id": object, "predicted_responder": "int8", "n_imputed": "int16",
             "ood_range": bool, "ood_multivariate": bool, "ood_range_features": object}
    for r in range(1, n_reasons + 1):
        kinds[f"reason_{r}"] = kinds[f"reason_{r}_feature"] = object
    return pd.DataFrame({c: pd.Series(dtype=kinds.get(c, "float64"))
                         for c in score_columns(n_reasons)})


def check_accounting(subjects: pd.Series, scored: pd.Series, rejects: pd.DataFrame) -> None:
    """Every input patient is in exactly one of the scores and the rejects.

    ``subjects``: every distinct subject_id of the input ("" once per line without one);
    ``scored``: the subject_ids scored; ``rejects``: the patient rejects.

    Raises
    ------
    RuntimeError
        Naming the first patients lost, scored twice, or both scored and rejected: a
        bug, never the data's fault.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from csf_responder.readers import arrow_text

    def text(values: pd.Series) -> pa.Array:
        return arrow_text(values.astype(str)).combine_chunks()

    def named(values: pa.Array) -> pa.Array:
        return values.filter(pc.not_equal(values, ""))

    # every id hashed once, by Arrow: a million take a fraction of a second
    rejected, expected_all = text(rejects["subject_id"]), text(subjects)
    parts = [named(expected_all), text(scored), named(rejected)]
    encoded = pc.dictionary_encode(pa.concat_arrays(parts))
    codes = np.split(encoded.indices.to_numpy(), np.cumsum([len(p) for p in parts[:2]]))
    size = len(encoded.dictionary)
    is_expected = np.zeros(size, dtype=bool)
    is_expected[codes[0]] = True
    n_scored, n_rejected = (np.bincount(c, minlength=size) for c in codes[1:])
    accounted = (n_scored + n_rejected) > 0

    def examples(which: np.ndarray) -> list[str]:
        return sorted(encoded.dictionary.filter(pa.array(which)).to_pylist())[:5]

    problems = []
    for found, what in ((n_scored > 1, "scored twice"),
                        ((n_scored > 0) & (n_rejected > 0), "scored and rejected"),
                        (is_expected & ~accounted, "neither scored nor rejected"),
                        (~is_expected & accounted, "not in the input")):
        if found.any():
            problems.append(f"{what}: {examples(found)}")
    blank_in, blank_out = (len(expected_all) - len(parts[0]), len(rejected) - len(parts[2]))
    if blank_in != blank_out:
        problems.append(f"{blank_in} line(s) without subject_id in the input, {blank_out} in "
                        "the rejects")
    if problems:
        raise RuntimeError("scoring accounting broken: " + "; ".join(problems))


@dataclass
class ChunkScores:
    """One chunk of a cohort scored (:func:`score_chunk`): its scores and all a caller
    tallies, without the chunk's tables.

    Attributes
    ----------
    scores : DataFrame
        One row per patient scored (:func:`score_columns`).
    rejects : DataFrame
        One row per patient not scored (the input contract, the lead-in exclusions, no
        CSF value the model uses), columns of
        :data:`csf_responder.ingest.SCORING_REJECT_COLUMNS`.
    input_rejects, accounting : DataFrame
        The row-level contract rejects and the per-file accounting of the chunk.
    subjects : Series
        Every subject of the chunk's input ("" once per line without one).
    notes : list of str
        The chunk's ingest notes.
    has_values : dict
        Each numeric column of the chunk's wide table -> whether any patient has a value.
    drift_values : DataFrame
        The CSF values drift is counted on (:class:`DriftAccumulator`), of the patients
        scored.
    head : DataFrame
        The first ``keep_rows`` rows of the wide table scored (for explanation plots).
    source : RawCohort
        The chunk's files (directory and names), without their rows.
    """

    scores: pd.DataFrame
    rejects: pd.DataFrame
    input_rejects: pd.DataFrame
    accounting: pd.DataFrame
    subjects: pd.Series
    notes: list[str]
    has_values: dict[str, bool]
    drift_values: pd.DataFrame
    head: pd.DataFrame
    source: Any


def score_chunk(raw, scorer: Scorer, *, drop_columns: Sequence[str] = (), keep_rows: int = 0,
                threads: int | None = None) -> ChunkScores:
    """Check one raw chunk of a cohort against the model's contract, build its wide
    table and score it (:class:`Scorer`).

    Parameters
    ----------
    raw : RawCohort
        A raw chunk of :class:`csf_responder.ingest.ScoringRead`.
    scorer : Scorer
        The model and its profile (whose contract the chunk is read with).
    drop_columns : sequence of str
        Identifier-like columns of patients.csv to drop instead of refusing.
    keep_rows : int
        Rows of the scored wide table to return (:attr:`ChunkScores.head`).
    threads : int, optional
        Threads the models may use (default: as the scorer is set).
    """
    from dataclasses import replace

    from csf_responder.ingest import SCORING_REJECT_COLUMNS, check_scoring_chunk

    profile = scorer.profile
    panel, indication = contract_specs(profile)
    chunk = check_scoring_chunk(raw, panel=panel, indication=indication,
                                drop_columns=drop_columns,
                                **profile["contract"]["lead_in"])
    no_csf = csf_rejects(chunk.table, profile)
    table = chunk.table.loc[~no_csf].reset_index(drop=True)
    if threads is not None:
        scorer.use_threads(threads)
    scores = scorer.score(table) if len(table) else empty_scores(scorer.n_reasons)
    rejects = [chunk.rejects]
    if no_csf.any():
        rejects.append(pd.DataFrame({
            "subject_id": chunk.table.loc[no_csf, "subject_id"].to_numpy(), "line": "",
            "rule": "no_csf", "column": "", "value": "",
            "detail": "no value of the CSF analytes the model uses"}))
    rejects = [r for r in rejects if len(r)]
    return ChunkScores(
        scores=scores,
        rejects=(pd.concat(rejects, ignore_index=True)[list(SCORING_REJECT_COLUMNS)]
                 if rejects else pd.DataFrame(columns=list(SCORING_REJECT_COLUMNS))),
        input_rejects=chunk.checked.rejects, accounting=chunk.checked.accounting,
        subjects=chunk.subjects, notes=list(chunk.checked.notes),
        has_values={str(c): bool(v.notna().any()) for c, v in chunk.table.items()
                    if pd.api.types.is_float_dtype(v)},
        drift_values=table[list(profile["drift"])],
        head=table.head(keep_rows),
        source=replace(raw, patients=raw.patients.iloc[:0], visits=raw.visits.iloc[:0],
                       csf=raw.csf.iloc[:0]))


#: What a worker scoring chunks imports as it starts (see :func:`score_chunks`).
WORKER_IMPORTS = ("xgboost", "sklearn.pipeline", "csf_responder.scoring",
                  "csf_responder.ingest")


def score_chunks(files, scorer: Scorer, *, drop_columns: Sequence[str] = (),
                 keep_rows: int = 0, pool=None):
    """:func:`score_chunk` over the chunks of a cohort, in their order.

    With a :class:`csf_responder.execution.ProcessPool`, the chunks are checked and
    scored in its worker processes (each model predicting on the worker's share of the
    cores), a few chunks ahead of the caller, so the pure-Python ingest of one chunk
    overlaps with another's prediction and with the writing here; the results are
    those of the serial run, in the same order. Workers that inherited ``(files,
    scorer)`` (:func:`scoring_pool`) take their chunks from them, by number; others
    receive each chunk, and the scorer once, pickled.

    Parameters
    ----------
    files : CohortFiles
        The cohort read (:meth:`csf_responder.ingest.ScoringRead.files`).

    Yields
    ------
    ChunkScores
    """
    if pool is None:
        for raw in files.chunks(melt=False):
            yield score_chunk(raw, scorer, drop_columns=drop_columns, keep_rows=keep_rows)
        return
    from functools import partial

    options = {"drop_columns": drop_columns, "keep_rows": keep_rows, "threads": pool.threads}
    if pool.inherits:
        yield from pool.imap(partial(_score_inherited, **options), range(files.n_chunks))
        return
    import pickle
    import uuid

    shipped = (uuid.uuid4().hex, pickle.dumps(scorer, protocol=pickle.HIGHEST_PROTOCOL))
    yield from pool.imap(partial(_score_shipped, scorer=shipped, **options),
                         files.chunks(melt=False))


def scoring_pool(files, scorer: Scorer, *, n_jobs: int):
    """Worker processes for :func:`score_chunks` (a context manager; None: score here,
    for a single chunk), forked where they can be with the cohort's ``files`` and the
    ``scorer`` (:class:`csf_responder.execution.ProcessPool`'s ``inherit``)."""
    from joblib import effective_n_jobs

    from csf_responder.execution import process_pool

    workers = min(files.n_chunks, effective_n_jobs(n_jobs)) if files.n_chunks > 1 else 1
    return process_pool(workers, warm_up=WORKER_IMPORTS, inherit=(files, scorer),
                        name="csf-score")


def _score_inherited(k: int, **kwargs) -> ChunkScores:
    """:func:`score_chunk` of chunk ``k`` in a worker of :func:`scoring_pool`, from the
    files and scorer it inherited."""
    from csf_responder.execution import inherited

    files, scorer = inherited()
    return score_chunk(files.chunk(k, melt=False), scorer, **kwargs)


#: The scorer a pool worker unpickled last, by its token (see :func:`_score_shipped`).
_SHIPPED: dict[str, Scorer] = {}


def _score_shipped(raw, *, scorer: tuple[str, bytes], **kwargs) -> ChunkScores:
    """:func:`score_chunk` in a pool worker, with a scorer pickled once by the caller
    (``(token, bytes)``) and unpickled once per worker: rebuilding its 21 models for
    every chunk took a sixth of a second, and as long again to pickle them."""
    import pickle

    token, payload = scorer
    if token not in _SHIPPED:
        _SHIPPED.clear()
        _SHIPPED[token] = pickle.loads(payload)
    return score_chunk(raw, _SHIPPED[token], **kwargs)


@dataclass
class ScoringTally:
    """What scoring a cohort chunk by chunk adds up to: counts, notes (each once),
    patient and row rejects, per-file accounting, the subjects seen and scored, and
    which CSF columns held any value (for :func:`check_inputs` on the whole cohort)."""

    notes: list[str] = field(default_factory=list)
    chunks: int = 0
    n_scored: int = 0
    responders: int = 0
    ood_range: int = 0
    ood_multivariate: int = 0
    _rejects: list = field(default_factory=list)
    _input_rejects: list = field(default_factory=list)
    _accounting: list = field(default_factory=list)
    _subjects: list = field(default_factory=list)
    _scored: list = field(default_factory=list)
    _values: dict[str, bool] = field(default_factory=dict)

    def new_notes(self, notes: Sequence[str]) -> list[str]:
        """The notes not seen before (recorded now)."""
        fresh = [n for n in dict.fromkeys(notes) if n not in self.notes]
        self.notes.extend(fresh)
        return fresh

    def add(self, chunk: ChunkScores) -> None:
        """Count one scored chunk (:func:`score_chunk`)."""
        scores = chunk.scores
        self.chunks += 1
        self.n_scored += len(scores)
        self.responders += int(scores["predicted_responder"].sum())
        self.ood_range += int(scores["ood_range"].sum())
        self.ood_multivariate += int(scores["ood_multivariate"].sum())
        self._rejects.append(chunk.rejects)
        self._input_rejects.append(chunk.input_rejects)
        self._accounting.append(chunk.accounting)
        self._subjects.append(chunk.subjects)
        self._scored.append(scores["subject_id"])
        for column, seen in chunk.has_values.items():
            self._values[column] = self._values.get(column, False) or seen

    @property
    def n_input(self) -> int:
        return sum(len(s) for s in self._subjects)

    def has_values(self) -> pd.DataFrame:
        """One row: each numeric column of the cohort table, 1.0 if any chunk had a value."""
        return pd.DataFrame({c: [1.0 if seen else np.nan] for c, seen in self._values.items()})

    def rejects(self) -> pd.DataFrame:
        from csf_responder.ingest import SCORING_REJECT_COLUMNS

        parts = [r for r in self._rejects if len(r)]
        columns = list(SCORING_REJECT_COLUMNS)
        return (pd.concat(parts, ignore_index=True)[columns] if parts
                else pd.DataFrame(columns=columns))

    def input_rejects(self) -> pd.DataFrame:
        parts = [r for r in self._input_rejects if len(r)]
        return (pd.concat(parts, ignore_index=True) if parts
                else self._input_rejects[0].iloc[0:0])

    def accounting(self) -> pd.DataFrame:
        """Rows read, used and rejected per file, over all chunks."""
        both = pd.concat(self._accounting, ignore_index=True)
        return both.groupby("file", sort=False, as_index=False).sum()

    def subjects(self) -> pd.Series:
        return pd.concat(self._subjects, ignore_index=True)

    def scored(self) -> pd.Series:
        return pd.concat(self._scored, ignore_index=True).astype(str)


# ------------------------------------------------------------------------------ drift
def psi(expected: np.ndarray, observed: np.ndarray) -> float:
    """Population stability index of two sets of bin fractions (floored at
    :data:`PSI_FLOOR`): sum of (observed - expected) * ln(observed / expected)."""
    e = np.maximum(np.asarray(expected, dtype=float), PSI_FLOOR)
    o = np.maximum(np.asarray(observed, dtype=float), PSI_FLOOR)
    return float(np.sum((o - e) * np.log(o / e)))


def _placed(grid: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per point of ``grid`` (sorted, distinct): how many ``values`` are below it and how
    many at most it. Each value is placed once among the few points (binary search) and
    checked for a tie with the point it lands on; ``values`` is never sorted."""
    if not len(grid):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    places = np.searchsorted(grid, values, side="left")  # how many points are below it
    tied = grid[np.minimum(places, len(grid) - 1)] == values
    at_most = np.cumsum(np.bincount(places, minlength=len(grid) + 1))[:len(grid)]
    return at_most - np.bincount(places[tied], minlength=len(grid)), at_most


@dataclass
class DriftAccumulator:
    """Drift of each CSF value the model uses, against its training values, chunk by chunk.

    For each column: the population stability index over the training deciles and the
    two-sample Kolmogorov-Smirnov statistic (exact: the scoring values' distribution
    function is counted at every training value, where the supremum lies), on the log
    scale; and the distribution of the scores (a 1000-bin histogram).
    """

    drift: dict[str, dict[str, Any]]
    _counts: dict[str, np.ndarray] = field(init=False, default_factory=dict)
    _below: dict[str, np.ndarray] = field(init=False, default_factory=dict)
    _at_most: dict[str, np.ndarray] = field(init=False, default_factory=dict)
    _n: dict[str, int] = field(init=False, default_factory=dict)
    _grids: dict[str, tuple[np.ndarray, ...]] = field(init=False, default_factory=dict)
    _scores: np.ndarray = field(init=False, default_factory=lambda: np.zeros(1000, np.int64))
    _sum: float = field(init=False, default=0.0)

    def add(self, table: pd.DataFrame, probability: np.ndarray) -> None:
        """Count one chunk: its rows of the wide table and their scores."""
        probability = np.asarray(probability, dtype="float64")
        self._sum += float(probability.sum())
        bins = np.clip((probability * 1000).astype(int), 0, 999)
        self._scores += np.bincount(bins, minlength=1000)
        for column in self.drift:
            values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype="float64")
            with np.errstate(divide="ignore", invalid="ignore"):
                logs = np.log(values[values > 0])
            grid, edge_at, point_at = self._grid(column)
            below, at_most = _placed(grid, logs)
            # PSI bin k: from edge k-1 (included) to edge k; KS: below and at most each
            # training value
            counts = np.diff(below[edge_at], prepend=0, append=len(logs))
            below, at_most = below[point_at], at_most[point_at]
            if column not in self._counts:
                self._counts[column] = np.zeros_like(counts)
                self._below[column] = np.zeros_like(below)
                self._at_most[column] = np.zeros_like(at_most)
                self._n[column] = 0
            self._counts[column] += counts
            self._below[column] += below
            self._at_most[column] += at_most
            self._n[column] += len(logs)

    def _grid(self, column: str) -> tuple[np.ndarray, ...]:
        """A column's PSI edges and KS training values as one sorted grid of distinct
        points (:func:`_placed`), and where each edge and each training value sits in it."""
        if column not in self._grids:
            ref = self.drift[column]
            edges = np.asarray(ref["edges"], dtype="float64")
            points = np.asarray(ref["ks_reference"], dtype="float64")
            grid = np.unique(np.concatenate([edges, points]))
            self._grids[column] = (grid, np.searchsorted(grid, edges),
                                   np.searchsorted(grid, points))
        return self._grids[column]

    def statistics(self) -> dict[str, dict[str, float]]:
        """Column -> ``psi``, ``ks``, ``ks_p`` (asymptotic two-sample p-value; with few
        training values, the figure to trust) and ``n`` (scoring values counted)."""
        out = {}
        for column, ref in self.drift.items():
            n = self._n.get(column, 0)
            if not n:
                out[column] = {"psi": float("nan"), "ks": float("nan"), "ks_p": float("nan"),
                               "n": 0}
                continue
            points = np.asarray(ref["ks_reference"])
            m = len(points)
            train_at_most = np.searchsorted(points, points, side="right") / m
            train_below = np.searchsorted(points, points, side="left") / m
            ks = max(np.max(np.abs(train_at_most - self._at_most[column] / n)),
                     np.max(np.abs(train_below - self._below[column] / n)))
            from scipy.stats import kstwobign

            p_value = float(kstwobign.sf(ks * np.sqrt(n * m / (n + m))))
            out[column] = {"psi": psi(ref["fractions"], self._counts[column] / n),
                           "ks": float(ks), "ks_p": p_value, "n": n}
        return out

    def score_distribution(self) -> dict[str, float]:
        """Mean and quantiles of the scores (from the histogram: to 0.001)."""
        total = int(self._scores.sum())
        if not total:
            return {}
        centres = (np.arange(1000) + 0.5) / 1000
        cumulative = np.cumsum(self._scores) / total
        quantile = {f"p{int(q * 100):02d}": float(centres[np.searchsorted(cumulative, q)])
                    for q in (0.05, 0.25, 0.5, 0.75, 0.95)}
        return {"mean": self._sum / total, **quantile}
