"""End to end: `csf-responder effect` on simulated trials, into a temporary MLflow store:
with CSF in both arms (the full analysis) and in the phase 2 design (CSF in the MSC arm
only, where CSF features cannot be called prognostic or predictive)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import CONFIGS, cli_env
from tests.test_report import _render_in_chromium

BIN = Path(sys.executable).parent
FAST = ["effect.n_bootstrap=3", "effect.n_qini_bootstrap=100", "enrichment.n_trials=400",
        "enrichment.n_bootstrap=200", "learners.xgboost.params.n_estimators=30"]
ESTIMATORS = {"interaction", "logistic_l2", "xgboost"}


def _effect(work: Path, env: dict[str, str], cohort: str, *sets: str):
    cli = str(BIN / "csf-responder")
    args = [cli, "effect", "--cohort", cohort, "--config", str(CONFIGS / "effect.yaml"),
            "--set", f"tracking.uri=sqlite:///{work / 'store' / 'mlflow.db'}",
            "--set", f"tracking.artifact_root={work / 'store' / 'artifacts'}",
            "--set", f"tracking.report_dir={work / 'reports' / cohort}"]
    for item in (*FAST, *sets):
        args += ["--set", item]
    result = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory, simulate):
    work = tmp_path_factory.mktemp("effect")
    env = cli_env()
    for name, extra in (("both", ["--set", "design.csf_in_controls=true", "--n-msc", "60",
                                  "--n-control", "60"]),
                        ("phase2", [])):  # tests/test_server.py's phase 2 cohort too
        simulate(work, "--out", name, "--truth", f"truth/{name}.csv",
                 "--config", str(CONFIGS / "simulate.yaml"), *extra)
    both = _effect(work, env, "both", "learning_curve.sizes=[40, 80]",
                   "learning_curve.repeats=1")
    phase2 = _effect(work, env, "phase2", "learning_curve.sizes=[]",
                     "learners={logistic_l2: models/logistic_l2.yaml}",
                     "learning_curve.model=logistic_l2")
    return work, {"both": both, "phase2": phase2}


def _client(work: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{work / 'store' / 'mlflow.db'}")


def _parent_and_children(work: Path, cohort: str):
    client = _client(work)
    experiment = client.get_experiment_by_name("csf-responder-effect")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags
                  and r.data.tags["cohort"] == cohort)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return client, parent, children


def _table(client, run_id: str, path: str, tmp: Path) -> pd.DataFrame:
    return pd.read_csv(client.download_artifacts(run_id, path, str(tmp)))


def test_effect_prints_effects_roles_rankings_and_where_to_look(runs):
    _, results = runs
    out = results["both"].stdout
    assert "MSC minus control (95% CI)" in out
    assert "Holm-adjusted" in out
    assert all(name in out for name in ESTIMATORS)
    assert "Enrichment (80% power, calibrated benefit)" in out
    assert "make ui" in out and "Report:" in out
    assert "benefit estimators x outcomes" in results["both"].stderr  # the progress bar


def test_parent_and_child_runs_hold_metrics_tables_and_figures(runs, tmp_path):
    work, _ = runs
    client, parent, children = _parent_and_children(work, "both")
    assert parent.data.tags["csf_separable"] == "true"
    assert parent.data.params["effect.n_folds"] == "5"
    for outcome in ("slope", "change", "responder"):
        m = parent.data.metrics
        assert m[f"effect_{outcome}_ci_low"] <= m[f"effect_{outcome}"] <= \
            m[f"effect_{outcome}_ci_high"]
    artifacts = {a.path for folder in ("tables", "figures", "report", "config")
                 for a in client.list_artifacts(parent.info.run_id, folder)}
    assert {"tables/roles.csv", "tables/enrichment.csv", "tables/learning_curve.csv",
            "figures/roles.png", "figures/qini.png", "figures/enrichment.png",
            "figures/learning_curve.png", "config/effect.yaml"} <= artifacts
    assert any(a.startswith("report/") and a.endswith(".html") for a in artifacts)

    assert {c.data.tags["estimator"] for c in children} == ESTIMATORS
    patients = pd.read_csv(work / "both" / "patients.csv")
    for child in children:
        m = child.data.metrics
        assert m["qini_area_slope_ci_low"] <= m["qini_area_slope"] <= m["qini_area_slope_ci_high"]
        assert m["benefit_loading_slope_ci_low"] <= m["benefit_loading_slope"]
        benefit = _table(client, child.info.run_id, "tables/benefit.csv", tmp_path)
        # every patient of both arms has a cross-fitted benefit with its interval
        assert sorted(benefit["subject_id"]) == sorted(patients["subject_id"])
        assert benefit["slope_benefit"].notna().all()
        assert (benefit["slope_benefit_low"] <= benefit["slope_benefit_high"]).all()
        figures = {a.path for a in client.list_artifacts(child.info.run_id, "figures")}
        assert figures == {"figures/benefit.png", "figures/calibration.png"}


def test_roles_table_calls_each_feature_with_intervals_and_p_values(runs, tmp_path):
    work, _ = runs
    client, parent, _ = _parent_and_children(work, "both")
    roles = _table(client, parent.info.run_id, "tables/roles.csv", tmp_path)
    assert "log_ratio_tgf_beta1_mcp1_baseline" in set(roles["feature"])
    for kind in ("prognostic", "predictive"):
        assert (roles[f"{kind}_low"] <= roles[kind]).all()
        assert (roles[kind] <= roles[f"{kind}_high"]).all()
        assert roles[f"{kind}_p_holm"].between(0, 1).all()
        assert (roles[f"{kind}_p_holm"] >= roles[f"{kind}_p"]).all()
    assert set(roles["role"]) <= {"predictive", "prognostic", "prognostic and predictive",
                                  "neither"}


def test_enrichment_sizes_agree_with_the_closed_form(runs, tmp_path):
    work, _ = runs
    client, parent, _ = _parent_and_children(work, "both")
    plan = _table(client, parent.info.run_id, "tables/enrichment.csv", tmp_path)
    assert plan["fraction_screened_out"].iloc[0] == 0
    assert (plan["effect_ci_low"] <= plan["effect"]).all()
    assert (plan["effect"] <= plan["effect_ci_high"]).all()
    assert plan["n_observed"].iloc[0] > plan["n_observed"].iloc[-1] > 0
    assert plan["fraction_screened_out"].is_monotonic_increasing
    for power in (80, 90):
        closed, simulated = plan[f"n_per_arm_{power}_closed"], plan[f"n_per_arm_{power}_simulated"]
        both = closed.notna() & simulated.notna() & (closed >= 10)
        assert both.sum() >= 3
        ratio = simulated[both] / closed[both]
        assert np.all(np.abs(ratio - 1) <= 0.10), plan.loc[both, [closed.name, simulated.name]]


def test_report_holds_every_section_and_every_figure_renders(runs, tmp_path):
    work, _ = runs
    report = next((work / "reports" / "both").glob("effect-both-*.html"))
    html = report.read_text()
    for section in ("summary", "roles", "benefit", "ranking", "enrichment", "study-size",
                    "limitations"):
        assert f'<section id="{section}">' in html
    body = _render_in_chromium(html, tmp_path)
    assert int(body["data-images-total"]) >= 10
    assert body["data-images-loaded"] == body["data-images-total"], body["data-images-broken"]


def test_phase2_design_runs_on_clinical_covariates_and_says_why(runs, tmp_path):
    work, results = runs
    out = " ".join(results["phase2"].stdout.split())
    assert "cannot be separated into prognostic and predictive" in out
    client, parent, children = _parent_and_children(work, "phase2")
    assert parent.data.tags["csf_separable"] == "false"
    roles = _table(client, parent.info.run_id, "tables/roles.csv", tmp_path)
    assert not roles["feature"].str.contains("log_").any()  # no CSF feature
    assert {"leadin_slope", "age"} <= set(roles["feature"])
    assert {c.data.tags["estimator"] for c in children} == {"interaction", "logistic_l2"}
    report = next((work / "reports" / "phase2").glob("effect-phase2-*.html")).read_text()
    assert "cannot be separated into prognostic and predictive" in report
