"""Simulated cohorts for tests: the simulator's default config with planted noise analytes
(``role: noise``, see :mod:`csf_responder.simulate`), and a panel that knows them."""

from __future__ import annotations

from typing import Any

from csf_responder.config import (
    PanelSpec,
    SimulationConfig,
    analyte_key,
    apply_overrides,
    load_yaml,
)
from tests.conftest import CONFIGS

#: Three analytes that influence nothing, measured the way the real ones are: one
#: quantified almost always, one often below its LLOQ (as VEGF), one the lab reports in
#: ng/mL (as angiogenin). Their spreads and changes after injection are as large as
#: those of the informative analytes, so nothing but their irrelevance tells them apart.
NOISE_ANALYTES: tuple[dict[str, Any], ...] = (
    {"name": "Noise-A", "role": "noise", "median_pg_ml": 80, "log_sd": 0.6,
     "reported_unit": "pg/mL", "pg_ml_per_reported_unit": 1, "lloq": 10,
     "msc_log_change": 0.2, "log_change_sd": 0.35, "assay_log_sd": 0.08},
    {"name": "Noise-B", "role": "noise", "median_pg_ml": 15, "log_sd": 0.7,
     "reported_unit": "pg/mL", "pg_ml_per_reported_unit": 1, "lloq": 8,
     "msc_log_change": -0.15, "log_change_sd": 0.4, "assay_log_sd": 0.12},
    {"name": "Noise-C", "role": "noise", "median_pg_ml": 1500, "log_sd": 0.5,
     "reported_unit": "ng/mL", "pg_ml_per_reported_unit": 1000, "lloq": 0.2,
     "msc_log_change": 0.1, "log_change_sd": 0.3, "assay_log_sd": 0.1},
)


def simulation_config(*overrides: str, noise: tuple[dict[str, Any], ...] = NOISE_ANALYTES
                      ) -> SimulationConfig:
    """``configs/simulate.yaml`` with ``key.path=value`` overrides, plus ``noise`` analytes
    after its own, validated as on load."""
    data = apply_overrides(load_yaml(CONFIGS / "simulate.yaml"), list(overrides))
    data["analytes"] = [*data["analytes"], *noise]
    return SimulationConfig.model_validate(data)


def noise_panel(noise: tuple[dict[str, Any], ...] = NOISE_ANALYTES) -> PanelSpec:
    """``configs/panels/csf_cytokines.yaml`` plus the ``noise`` analytes (canonical unit
    pg/mL, required), validated as on load."""
    data = load_yaml(CONFIGS / "panels" / "csf_cytokines.yaml")
    data["analytes"] = [*data["analytes"], *(
        {"name": a["name"], "key": analyte_key(a["name"]), "unit": "pg/mL", "required": True,
         "lloq": a["lloq"] * a["pg_ml_per_reported_unit"]} for a in noise)]
    return PanelSpec.model_validate(data)


def effect_rows(directory, config):
    """A cohort directory through the real ingest, as the effect analysis' rows
    (:func:`csf_responder.effect.effect_data`: 6-month change, MSC vs control) under
    ``config`` (an EffectConfig)."""
    from csf_responder import effect
    from csf_responder.ingest import ingest_cohort
    from csf_responder.labels import change_at_horizon

    cohort = ingest_cohort(directory, panel=config.panel, indication=config.indication,
                           labels=config.labels, drop_columns=[])
    change = change_at_horizon(cohort.checked.visits, cohort.labels, horizon_months=6,
                               horizon_tolerance_days=21)
    return effect.effect_data(cohort.table, cohort.labels, change, treated_arm="MSC",
                              control_arm="control", higher_is_better=True)
