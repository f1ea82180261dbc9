"""The ingest stage end to end: one panel in every layout and format gives one table."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from csf_responder.config import IndicationSpec, SimulationConfig, TrainConfig, load_config
from csf_responder.errors import CohortError
from csf_responder.ingest import ScoringRead, ingest_cohort
from csf_responder.io import read_cohort_chunks, write_cohort
from csf_responder.simulate import simulate_trial
from tests.conftest import CONFIGS
from tests.simulated import simulation_config

ALIASES = {"TGF-beta1": "TGFB1", "MCP-1": "CCL2", "VEGF": "VEGF-A", "Angiogenin": "ANG"}


@pytest.fixture(scope="module")
def trial():
    config = load_config(CONFIGS / "simulate.yaml", SimulationConfig,
                         overrides=["n_msc=8", "n_control=3", "seed=4"])[0]
    return simulate_trial(config)


@pytest.fixture(scope="module")
def config() -> TrainConfig:
    return load_config(CONFIGS / "train.yaml", TrainConfig)[0]


def _ingest(directory, config, **overrides):
    panel = config.panel.model_copy(update=overrides) if overrides else config.panel
    return ingest_cohort(directory, panel=panel, indication=config.indication,
                           labels=config.labels, drop_columns=())


def _write(directory, trial, csf: pd.DataFrame, name: str = "csf.csv"):
    write_cohort(directory, patients=trial.patients, visits=trial.alsfrs, csf=trial.csf,
                 visits_file="alsfrs.csv")
    (directory / "csf.csv").unlink()
    path = directory / name
    if name.endswith(".parquet"):
        csf.to_parquet(path, index=False)
    elif name.endswith(".xlsx"):
        csf.to_excel(path, index=False)
    elif name.endswith(".tsv"):
        csf.to_csv(path, index=False, sep="\t")
    else:
        csf.to_csv(path, index=False)
    return directory


def _in_ng_ml_with_aliases(csf: pd.DataFrame) -> pd.DataFrame:
    """The same measurements in ng/mL (values and limits) under lab aliases."""
    out = csf.copy()
    pg = out["unit"] == "pg/mL"
    censored = out["value"].str.startswith("<")
    number = pd.to_numeric(out["value"].str.lstrip("<"))
    lloq = pd.to_numeric(out["lloq"])
    scaled = np.where(pg, number / 1000, number)
    out["value"] = np.where(censored, "<", "") + pd.Series(scaled).map(lambda v: f"{v:.10g}")
    out["lloq"] = pd.Series(np.where(pg, lloq / 1000, lloq)).map(lambda v: f"{v:.10g}")
    out["unit"] = "ng/mL"
    out["analyte"] = out["analyte"].map(ALIASES)
    return out


def _wide(csf: pd.DataFrame, *, units: str) -> pd.DataFrame:
    """One row per sample, one column per analyte; units in the header or in a units row."""
    unit_of = csf.groupby("analyte")["unit"].first()
    wide = csf.pivot(index=["subject_id", "timepoint"], columns="analyte", values="value")
    wide = wide.reset_index()
    wide.columns.name = None
    if units == "header":
        return wide.rename(columns={a: f"{a} ({unit_of[a]})" for a in unit_of.index})
    units_row = pd.DataFrame([{"subject_id": "", "timepoint": "", **unit_of.to_dict()}])
    return pd.concat([units_row, wide], ignore_index=True)


def _comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=[c for c in table if c.startswith("plate_")]).sort_values(
        "subject_id").reset_index(drop=True)


def test_every_layout_and_format_ingests_to_the_same_table(tmp_path, trial, config):
    # wide files carry no lloq column, so give the long reference none either: the
    # panel's default limits apply to "<x" cells only when the cell has no number
    long = trial.csf.drop(columns=["lloq", "plate"])
    reference = _comparable(_ingest(_write(tmp_path / "ref", trial, long), config).table)
    variants = {
        "long, ng/mL, aliases": (_in_ng_ml_with_aliases(trial.csf).drop(columns=["lloq", "plate"]),
                                 "csf.csv"),
        "long TSV": (long, "csf.tsv"),
        "long XLSX": (long, "csf.xlsx"),
        "long Parquet": (long, "csf.parquet"),
        "wide, units in header": (_wide(trial.csf, units="header"), "csf.csv"),
        "wide, units row, XLSX": (_wide(trial.csf, units="row"), "csf.xlsx"),
    }
    for label, (csf, name) in variants.items():
        cohort = _ingest(_write(tmp_path / label.replace(" ", "_").replace(",", ""), trial,
                                csf, name), config)
        assert cohort.checked.rejects.empty, label
        pd.testing.assert_frame_equal(_comparable(cohort.table), reference, rtol=1e-9,
                                      obj=label)


def test_decimal_comma_export_reads_like_the_original(tmp_path, trial, config):
    reference = _ingest(_write(tmp_path / "ref", trial, trial.csf), config).table
    comma = trial.csf.assign(value=trial.csf["value"].str.replace(".", ",", regex=False),
                             lloq=trial.csf["lloq"].str.replace(".", ",", regex=False))
    directory = tmp_path / "comma"
    _write(directory, trial, comma)
    (directory / "csf.csv").write_text(comma.to_csv(index=False, sep=";"))
    table = _ingest(directory, config, decimal_comma=True).table
    pd.testing.assert_frame_equal(_comparable(table), _comparable(reference))
    # read without the flag, "304,9" is no number: nothing is misread as 3049, every
    # value is refused and the run stops on the first required analyte
    with pytest.raises(CohortError, match="required analyte .* has no usable value"):
        _ingest(directory, config)


def test_identifier_column_is_refused_unless_configured_to_drop(tmp_path, trial, config):
    directory = _write(tmp_path / "c", trial, trial.csf)
    patients = trial.patients.assign(date_of_birth="1970-01-01")
    patients.to_csv(directory / "patients.csv", index=False)
    with pytest.raises(CohortError, match="column 'date_of_birth'.*direct identifier"):
        _ingest(directory, config)
    cohort = ingest_cohort(directory, panel=config.panel, indication=config.indication,
                           labels=config.labels,
                           drop_columns=["date_of_birth"])
    assert "date_of_birth" not in cohort.table.columns
    assert any("date_of_birth" in note for note in cohort.checked.notes)


def test_rows_read_equal_rows_used_plus_rejected(tmp_path, trial, config):
    csf = trial.csf.copy()
    csf.loc[0, "value"] = "n/a?"           # value_invalid
    csf.loc[1, "analyte"] = "IL-99"        # analyte_unknown
    csf.loc[2, "subject_id"] = "NOBODY"    # subject_unknown
    cohort = _ingest(_write(tmp_path / "c", trial, csf), config)
    accounting = cohort.checked.accounting.set_index("file")
    csf_row = accounting.loc[str(tmp_path / "c" / "csf.csv")]
    assert csf_row["rows_read"] == len(csf)
    assert csf_row["rows_rejected"] == 3
    assert csf_row["rows_used"] == len(csf) - 3
    assert sorted(cohort.checked.rejects["rule"]) == ["analyte_unknown", "subject_unknown",
                                                      "value_invalid"]
    assert (cohort.checked.rejects["line"].sort_values().tolist() == [2, 3, 4])


def test_bridging_samples_undo_a_plate_bias_inside_the_pipeline(tmp_path, trial, config):
    """Plate B reads every analyte twice as high; its bridging sample reads 2x too."""
    from csf_responder.features import BridgeNormalization

    csf = trial.csf.drop(columns=["lloq"]).copy()
    observed = ~csf["value"].str.startswith("<")
    plate_b = csf["subject_id"].isin(trial.patients["subject_id"].iloc[::2])
    csf["plate"] = np.where(plate_b, "B", "A")
    bias = np.where(plate_b & observed, 2.0, 1.0)
    csf.loc[observed, "value"] = (pd.to_numeric(csf.loc[observed, "value"]) * bias[observed]
                                  ).map(lambda v: f"{v:.10g}")
    units = csf.groupby("analyte")["unit"].first()
    bridges = pd.DataFrame([
        {"subject_id": "POOL", "timepoint": "", "analyte": a, "value": f"{level * 1000:g}",
         "unit": units[a], "plate": plate, "sample_type": "bridge"}
        for a in units.index for plate, level in (("A", 1.0), ("B", 2.0))])
    biased = pd.concat([csf.assign(sample_type="sample"), bridges], ignore_index=True)
    truth = _ingest(_write(tmp_path / "truth", trial, trial.csf.drop(columns=["lloq"])),
                    config).table.set_index("subject_id")
    table = _ingest(_write(tmp_path / "biased", trial, biased), config).table
    normalised = BridgeNormalization().fit_transform(
        table.drop(columns=["arm", "responder"])).set_index(table["subject_id"])
    # every plate is brought to the geometric mean of the bridges (sqrt 2 x plate A)
    for key in ("tgf_beta1", "mcp1", "vegf", "angiogenin"):
        column = f"{key}_baseline"
        quantified = (truth[f"{column}_flag"] == "observed").reindex(normalised.index)
        ratio = (normalised.loc[quantified, column] / truth.loc[quantified.index[quantified],
                                                                 column])
        assert ratio.to_numpy() == pytest.approx(np.sqrt(2.0), rel=1e-6), key


# ------------------------------------------------------------------ reading to score
@pytest.fixture
def small_cohort(tmp_path):
    directory = tmp_path / "cohort"
    directory.mkdir()
    (directory / "patients.csv").write_text("subject_id,age\nP01,54\nP02,61\n")
    (directory / "alsfrs.csv").write_text(
        "subject_id,day,alsfrs_r\nP02,0,41\nP01,-84,40\nP01,0,37\n")
    (directory / "csf.csv").write_text(
        "subject_id,timepoint,analyte,value,unit\nP01,baseline,MCP-1,<15.6,pg/mL\n")
    return directory


def test_a_cohort_read_in_the_background_gives_the_chunks_read_at_once(small_cohort):
    indication = IndicationSpec.model_construct(visits_file="alsfrs.csv")
    with ScoringRead(small_cohort, chunk_size=1) as reading:
        reading.name_visits(indication)
        chunks = list(reading.chunks())
    direct = list(read_cohort_chunks(small_cohort, visits_file="alsfrs.csv", chunk_size=1,
                                     melt=False))
    assert len(chunks) == len(direct) == 2
    for late, early in zip(chunks, direct, strict=True):
        assert not late.csf_melted
        pd.testing.assert_frame_equal(late.visits, early.visits)
        pd.testing.assert_frame_equal(late.csf, early.csf)


def _same_chunks(found, expected) -> None:
    assert len(found) == len(expected)
    for one, other in zip(found, expected, strict=True):
        pd.testing.assert_frame_equal(one.visits, other.visits)
        pd.testing.assert_frame_equal(one.patients, other.patients)


def test_the_only_other_csv_file_is_read_as_the_visits_before_it_is_named(small_cohort):
    direct = list(read_cohort_chunks(small_cohort, visits_file="alsfrs.csv", chunk_size=1,
                                     melt=False))
    with ScoringRead(small_cohort, chunk_size=1) as reading:
        # without the guess this would wait for the name: a timeout, not a hang
        early = ThreadPoolExecutor(1).submit(lambda: list(reading.chunks())).result(30)
        reading.name_visits(IndicationSpec.model_construct(visits_file="alsfrs.csv"))
        named = list(reading.chunks())
    _same_chunks(early, direct)
    _same_chunks(named, direct)


def test_a_wrong_guess_of_the_visits_file_is_read_again_by_its_name(small_cohort):
    (small_cohort / "alsfrs.csv").rename(small_cohort / "edss.csv")
    with ScoringRead(small_cohort, chunk_size=1) as reading:
        reading.name_visits(IndicationSpec.model_construct(visits_file="alsfrs.csv"))
        with pytest.raises(CohortError, match="alsfrs.csv"):
            reading.chunks()
    with ScoringRead(small_cohort, chunk_size=1) as reading:
        reading.name_visits(IndicationSpec.model_construct(visits_file="edss.csv"))
        assert [len(c.visits) for c in reading.chunks()] == [2, 1]


def test_a_background_read_left_unnamed_stops_and_errors_reach_the_caller(small_cohort):
    (small_cohort / "notes.csv").write_text("any\n")  # two other CSV files: no guess
    left = threading.Event()

    def leave_unnamed() -> None:  # e.g. the model failed to load: the file is never named
        with ScoringRead(small_cohort, chunk_size=1):
            pass
        left.set()

    threading.Thread(target=leave_unnamed, daemon=True).start()
    assert left.wait(timeout=60)  # the reading stopped and its thread ended: no hang
    (small_cohort / "alsfrs.csv").unlink()
    with ScoringRead(small_cohort, chunk_size=1) as reading:
        reading.name_visits(IndicationSpec.model_construct(visits_file="alsfrs.csv"))
        with pytest.raises(CohortError, match="alsfrs.csv"):
            reading.chunks()


# ------------------------------------------- wide CSF checked in its layout (scoring)
@pytest.fixture(scope="module")
def scoring_tables() -> dict[str, pd.DataFrame]:
    """A simulated scoring cohort of 40 patients: its three tables as text, the CSF wide
    with units in the headers (Angiogenin in ng/mL, the panel's unit being pg/mL) and
    censored cells written as ``<lloq``."""
    from csf_responder.simulate import scoring_blocks

    block = next(scoring_blocks(simulation_config(noise=()), 40))
    return {name: table.to_pandas().astype(str) for name, table in
            (("patients.csv", block.patients), ("alsfrs.csv", block.alsfrs),
             ("csf.csv", block.csf))}


def _checked_both_ways(directory, tables, config, panel=None):
    """Check the scoring cohort written from ``tables`` as a wide chunk would be, and
    again melted first (the long layout, the reference); assert that both give the same
    table, rejects, accounting and notes; return whether the wide layout was checked as
    it is (rather than melted after all)."""
    from csf_responder.ingest import _analyte_names, check_scoring_chunk
    from csf_responder.io import melt_chunk

    directory.mkdir()
    for name, table in tables.items():
        table.to_csv(directory / name, index=False)
    raw = next(read_cohort_chunks(directory, visits_file="alsfrs.csv", chunk_size=None,
                                  melt=False))
    panel = panel or config.panel
    kwargs = {"panel": panel, "indication": config.indication, "drop_columns": (),
              "lead_in_days": config.labels.lead_in_days, "baseline_tolerance_days": 14,
              "min_visits_lead_in": config.labels.min_visits_lead_in}
    as_read = check_scoring_chunk(raw, **kwargs)
    melted = check_scoring_chunk(melt_chunk(raw, _analyte_names(panel)), **kwargs)
    assert melted.checked.csf_cells is None
    pd.testing.assert_frame_equal(as_read.table, melted.table, check_exact=True)
    pd.testing.assert_frame_equal(as_read.rejects, melted.rejects)
    for part in ("rejects", "accounting"):
        pd.testing.assert_frame_equal(getattr(as_read.checked, part),
                                      getattr(melted.checked, part))
    assert as_read.checked.notes == melted.checked.notes
    pd.testing.assert_series_equal(as_read.subjects, melted.subjects)
    return as_read.checked.csf_cells is not None


def _with_csf(tables, change) -> dict[str, pd.DataFrame]:
    csf = tables["csf.csv"].copy()
    return {**tables, "csf.csv": change(csf)}


def _cells(csf: pd.DataFrame, rows: list[int], column: str, values: list[str]):
    csf.loc[rows, csf.columns[csf.columns.str.startswith(column)][0]] = values
    return csf


CLEAN_WIDE = {  # every cell passes the contract: checked in the wide layout
    "as simulated": lambda csf: csf,
    "censored without a number, missing, extrapolated, spaces": lambda csf: _cells(
        csf, [0, 1, 2, 3, 4], "TGF-beta1", ["< LLOQ", "", "ND", "*41.5", " 52.5 "]),
    "a censored cell in a converted unit": lambda csf: _cells(
        csf, [0, 5], "Angiogenin", ["<LLOQ", "BLQ"]),
    "timepoints spelled otherwise": lambda csf: csf.assign(
        timepoint=csf["timepoint"].map({"baseline": "Baseline", "week4": "Week 4"})),
    "ids and plates with spaces": lambda csf: csf.assign(
        subject_id=" " + csf["subject_id"], plate=csf["plate"] + " "),
    "no plate column": lambda csf: csf.drop(columns="plate"),
    "a patient without CSF, another without week4": lambda csf: csf.iloc[3:].drop(
        index=8),
    "analytes under their aliases": lambda csf: csf.rename(columns=lambda c: c.replace(
        "MCP-1", "CCL2").replace("TGF-beta1", "TGFB1")),
    "units in a units row": lambda csf: _units_row(csf),
}


def _units_row(csf: pd.DataFrame) -> pd.DataFrame:
    """The units moved from the headers to a first row (as some lab exports have them)."""
    units = {c: c.split(" (")[1].rstrip(")") for c in csf if " (" in c}
    row = pd.DataFrame([{c: units.get(c, "") for c in csf}])
    return pd.concat([row, csf], ignore_index=True).rename(
        columns=lambda c: c.split(" (")[0])

NOT_CLEAN_WIDE = {  # some cell breaks a rule, or the file needs the long layout
    "an invalid value": lambda csf: _cells(csf, [3], "MCP-1", ["12..5"]),
    "a negative value": lambda csf: _cells(csf, [4], "VEGF", ["-3"]),
    "an unknown subject": lambda csf: csf.assign(
        subject_id=csf["subject_id"].where(csf.index != 2, "XX0001")),
    "a blank subject": lambda csf: csf.assign(
        subject_id=csf["subject_id"].where(csf.index != 2, "")),
    "a sample on two rows": lambda csf: pd.concat([csf, csf.iloc[[5]]], ignore_index=True),
    "a conflicting sample": lambda csf: pd.concat(
        [csf, _cells(csf.iloc[[5]].copy(), [5], "VEGF", ["999"])], ignore_index=True),
    "an unknown timepoint": lambda csf: csf.assign(
        timepoint=csf["timepoint"].where(csf.index != 0, "week12")),
    "above a limit the panel does not give": lambda csf: _cells(csf, [7], "MCP-1",
                                                                ["> ULOQ"]),
    "replicate wells": lambda csf: pd.concat([csf.assign(replicate="1"),
                                              csf.assign(replicate="2")], ignore_index=True),
    "a limit column": lambda csf: csf.assign(lloq="10"),
    "no units": lambda csf: csf.rename(columns=lambda c: c.split(" (")[0]),
}


@pytest.mark.parametrize("label", list(CLEAN_WIDE))
def test_a_clean_wide_csf_checked_in_its_layout_gives_what_its_long_layout_gives(
        tmp_path, scoring_tables, config, label):
    tables = _with_csf(scoring_tables, CLEAN_WIDE[label])
    assert _checked_both_ways(tmp_path / "cohort", tables, config)


@pytest.mark.parametrize("label", list(NOT_CLEAN_WIDE))
def test_a_wide_csf_with_a_rejected_cell_is_checked_in_its_long_layout(
        tmp_path, scoring_tables, config, label):
    tables = _with_csf(scoring_tables, NOT_CLEAN_WIDE[label])
    assert not _checked_both_ways(tmp_path / "cohort", tables, config)


def test_a_wide_csf_in_decimal_commas_checked_in_its_layout_reads_the_same(
        tmp_path, scoring_tables, config):
    analytes = [c for c in scoring_tables["csf.csv"] if "(" in c]
    tables = _with_csf(scoring_tables, lambda csf: csf.assign(
        **{c: csf[c].str.replace(".", ",", regex=False) for c in analytes}))
    comma = config.panel.model_copy(update={"decimal_comma": True})
    assert _checked_both_ways(tmp_path / "comma", tables, config, panel=comma)


def test_a_unit_that_cannot_be_converted_is_the_same_error_in_the_wide_layout(
        tmp_path, scoring_tables, config):
    tables = _with_csf(scoring_tables, lambda csf: csf.rename(
        columns=lambda c: c.replace("(pg/mL)", "(furlongs)") if c.startswith("VEGF") else c))
    with pytest.raises(CohortError, match=r"csf.csv, line 2, column 'unit': unit "
                                          "'furlongs' cannot be converted to pg/mL"):
        _checked_both_ways(tmp_path / "cohort", tables, config)
