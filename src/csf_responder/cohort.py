"""The wide cohort table: one row per patient, the single input of the model Pipeline."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from csf_responder.config import AnalyteSpec

__all__ = ["BRIDGE_SUFFIX", "FLAG_SUFFIX", "VISIT_COLUMNS", "cohort_table", "csf_columns"]

#: Suffix of the column that holds each CSF value's censoring flag.
FLAG_SUFFIX = "_flag"

#: Suffix of the column that holds the bridging sample's value on each sample's plate.
BRIDGE_SUFFIX = "_bridge"

#: Columns summarising the visits up to baseline (what is known before treatment).
VISIT_COLUMNS = ("score_baseline", "leadin_slope")


def csf_columns(keys: Sequence[str], timepoints: Sequence[str]) -> list[str]:
    """Names of the value columns of a panel: ``{analyte_key}_{timepoint}``."""
    return [f"{key}_{tp}" for key in keys for tp in timepoints]


def cohort_table(
    patients: pd.DataFrame,
    lead_in: pd.DataFrame,
    csf: pd.DataFrame,
    *,
    covariates: Sequence[str],
    analytes: Sequence[AnalyteSpec],
    timepoints: Sequence[str],
    bridges: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Assemble the raw wide cohort table.

    Parameters
    ----------
    patients : DataFrame
        Checked patients table (one row per subject) with ``subject_id``, ``arm`` and the
        ``covariates``.
    lead_in : DataFrame
        ``subject_id``, ``score_baseline`` and ``leadin_slope`` (points/month) of the
        same subjects (:func:`csf_responder.labels.lead_in_summary`).
    covariates : sequence of str
        The indication's clinical covariates, in order.
    csf : DataFrame
        Checked CSF table: ``subject_id``, ``timepoint``, ``analyte``, ``value`` (canonical
        unit; the limit when censored) and ``flag``.
    analytes, timepoints
        The panel, which fixes the CSF columns whether or not a patient has the sample.
    bridges : DataFrame, optional
        Bridging-sample values per ``plate`` and ``analyte`` (``value``, canonical unit).

    Returns
    -------
    DataFrame
        One row per patient: ``subject_id``, ``arm``, the covariates, ``score_baseline``
        and ``leadin_slope``, then for each
        analyte and timepoint a value column ``{key}_{timepoint}`` (float, canonical
        unit, e.g. pg/mL) and a flag column ``{key}_{timepoint}_flag`` (``observed``,
        ``below``, ``above``, ``extrapolated`` or ``missing``). A censored value holds
        its limit; imputing it is a step of the model Pipeline. Then ``plate_{timepoint}``:
        the assay plate of each sample ("" when unknown), for plate correction, and
        ``{key}_{timepoint}_bridge``: the bridging sample's value for that analyte on
        that plate (NaN without one), for bridging-sample normalisation.
    """
    table = patients.merge(lead_in[["subject_id", *VISIT_COLUMNS]],
                           on="subject_id", how="left", validate="one_to_one")
    table = table[["subject_id", "arm", *covariates, *VISIT_COLUMNS]].copy()
    index = pd.Index(table["subject_id"])
    by_name = {spec.name: spec.column_key for spec in analytes}
    wide_value = csf.pivot(index="subject_id", columns=["analyte", "timepoint"], values="value")
    wide_flag = csf.pivot(index="subject_id", columns=["analyte", "timepoint"], values="flag")
    columns: dict[str, np.ndarray] = {}
    for name, key in by_name.items():
        for tp in timepoints:
            if (name, tp) in wide_value.columns:
                value = wide_value[(name, tp)].reindex(index).to_numpy(dtype="float64")
                flag = wide_flag[(name, tp)].reindex(index).fillna("missing").to_numpy(object)
            else:
                value = np.full(len(index), np.nan)
                flag = np.full(len(index), "missing", dtype=object)
            columns[f"{key}_{tp}"] = value
            columns[f"{key}_{tp}{FLAG_SUFFIX}"] = flag
    plates = (csf.drop_duplicates(["subject_id", "timepoint"])
              .pivot(index="subject_id", columns="timepoint", values="plate")
              if "plate" in csf else pd.DataFrame(index=index))
    for tp in timepoints:
        plate = (plates[tp].reindex(index) if tp in plates
                 else pd.Series(index=index, dtype=object))
        columns[f"plate_{tp}"] = plate.astype(object).fillna("").astype(str).to_numpy(object)
    has_bridges = bridges is not None and not bridges.empty
    for name, key in by_name.items():
        mine = bridges.loc[bridges["analyte"] == name] if has_bridges else None
        by_plate = (pd.Series(mine["value"].to_numpy(), index=mine["plate"].astype(str))
                    if has_bridges else None)
        for tp in timepoints:
            columns[f"{key}_{tp}{BRIDGE_SUFFIX}"] = (
                pd.Series(columns[f"plate_{tp}"]).map(by_plate).to_numpy(dtype="float64")
                if by_plate is not None and len(by_plate) else np.full(len(index), np.nan))
    return pd.concat([table.reset_index(drop=True), pd.DataFrame(columns)], axis=1)
