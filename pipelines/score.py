"""Recipe: score a new cohort with a logged model.

model -> ingest (the model's own contract) -> check the cohort against the model ->
score in chunks (probability, interval, class, reasons, out-of-distribution flags) and
count drift -> rejects, accounting, figures, summary -> one rename makes the output
appear -> an MLflow run in the scoring experiment.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from csf_responder import figures, scoring, tracking
from csf_responder.config import ScoreConfig, load_config
from csf_responder.ingest import SCORING_REJECT_COLUMNS, ingest_scoring_cohort
from csf_responder.io import StagedDirectory, TableStream, cohort_digest
from pipelines.console import Reporter


@dataclass(frozen=True)
class ScoreOutcome:
    out: Path
    cohort: str
    model_uri: str
    model_version: str
    model_family: str
    training_run_id: str
    n_input: int
    n_scored: int
    rejected: dict[str, int]
    n_predicted_responders: int
    n_ood_range: int
    n_ood_multivariate: int
    distribution: dict[str, float]
    drift: dict[str, dict[str, float]]
    run_id: str
    tracking_uri: str
    experiment: str
    seconds: float
    notes: list[str] = field(default_factory=list)


def default_out(out_dir: str | Path, cohort: Path, now: datetime) -> Path:
    """``<out_dir>/<cohort directory name>-<date>``."""
    return Path(out_dir) / f"{cohort.resolve().name}-{now:%Y-%m-%d}"


def run(*, cohort: Path, config_path: Path, overrides: list[str], reporter: Reporter,
        model: str | None = None, out: Path | None = None, force: bool = False,
        explain_plots: int = 0) -> ScoreOutcome:
    started = time.perf_counter()
    config, _ = load_config(config_path, ScoreConfig, overrides=overrides)
    now = datetime.now()
    target = out or default_out(config.out_dir, cohort, now)
    with StagedDirectory(target, force=force) as staging:  # refuses an existing output
        uri = tracking.setup_tracking(config.tracking.uri,
                                      artifact_root=config.tracking.artifact_root,
                                      experiment=config.tracking.experiment)
        loaded = tracking.load_scoring_model(model or config.model)
        profile = loaded.profile
        contract = profile["contract"]
        panel, indication = scoring.contract_specs(profile)
        ingested = ingest_scoring_cohort(cohort, panel=panel, indication=indication,
                                         drop_columns=config.drop_columns,
                                         **contract["lead_in"])
        csf_file = ingested.raw.file("csf.csv")
        notes = [*ingested.checked.notes,
                 *scoring.check_inputs(ingested.table, profile, file=csf_file)]
        reporter.notes(notes)
        no_csf = scoring.csf_rejects(ingested.table, profile)
        rejects = pd.concat([ingested.rejects, pd.DataFrame({
            "subject_id": ingested.table.loc[no_csf, "subject_id"], "line": "",
            "rule": "no_csf", "column": "", "value": "",
            "detail": "no value of the CSF analytes the model uses"})],
            ignore_index=True)[list(SCORING_REJECT_COLUMNS)]
        table = ingested.table.loc[~no_csf].reset_index(drop=True)

        scorer = scoring.Scorer(loaded.model, profile, loaded.interval_models,
                                n_reasons=config.n_reasons)
        drift = scoring.DriftAccumulator(profile["drift"])
        stream = TableStream(staging, "scores")
        scored_ids, counts = [], {"responders": 0, "ood_range": 0, "ood_multivariate": 0}
        chunks = range(0, len(table), config.chunk_size)
        with reporter.progress(len(chunks), label="scoring chunks") as advance:
            for start in chunks:
                part = table.iloc[start:start + config.chunk_size]
                scores = scorer.score(part)
                drift.add(part, scores["probability"].to_numpy())
                stream.write(scores)
                scored_ids.append(scores["subject_id"])
                counts["responders"] += int(scores["predicted_responder"].sum())
                counts["ood_range"] += int(scores["ood_range"].sum())
                counts["ood_multivariate"] += int(scores["ood_multivariate"].sum())
                advance()
        stream.close(empty=scoring.empty_scores(config.n_reasons))
        scored = (pd.concat(scored_ids, ignore_index=True) if scored_ids
                  else pd.Series([], dtype=object))
        scoring.check_accounting(ingested.subjects, scored, rejects)

        rejects.to_csv(staging / "rejects.csv", index=False)
        ingested.checked.rejects.to_csv(staging / "input_rejects.csv", index=False)
        ingested.checked.accounting.to_csv(staging / "accounting.csv", index=False)
        statistics = drift.statistics()
        drift_table = pd.DataFrame([{"column": c, **v} for c, v in statistics.items()],
                                   columns=["column", "psi", "ks", "ks_p", "n"])
        drift_table.to_csv(staging / "drift.csv", index=False)
        if len(drift_table):
            figures.drift_plot(drift_table, path=staging / "drift.png",
                               title=f"CSF drift vs training: {cohort.name}")
        if explain_plots and len(table) and profile["features"]:
            shown = table.head(explain_plots)
            values, labels, base = scorer.explain(shown)
            for i, subject in enumerate(shown["subject_id"]):
                figures.shap_waterfall_plot(
                    values.iloc[i], list(labels.iloc[i]), base=float(base[i]),
                    path=staging / "explanations" / f"{subject}.png",
                    title=f"Why: {subject} ({loaded.profile['family']})")
        rejected = rejects["rule"].value_counts().to_dict()
        summary = {
            "cohort": str(cohort), "data_digest": cohort_digest(ingested.raw),
            "scored_at": now.isoformat(timespec="seconds"),
            "model": {"uri": loaded.uri, "name": loaded.name, "version": loaded.version,
                      "family": profile["family"], "training_run_id": loaded.run_id,
                      "threshold": profile["threshold"],
                      "interval_level": profile["interval_level"],
                      "n_interval_models": len(loaded.interval_models)},
            "counts": {"input_patients": len(ingested.subjects), "scored": len(scored),
                       "rejected": len(rejects), "rejected_by_rule": rejected,
                       "predicted_responders": counts["responders"],
                       "ood_range": counts["ood_range"],
                       "ood_multivariate": counts["ood_multivariate"]},
            "score_distribution": drift.score_distribution(),
            "drift": statistics, "notes": notes,
        }
        (staging / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    run_id = tracking.log_scoring_run(
        name=f"score {cohort.resolve().name} {now:%Y-%m-%d %H:%M}", summary=summary,
        files=[target / name for name in ("summary.json", "drift.png", "drift.csv",
                                           "accounting.csv")])
    return ScoreOutcome(
        out=target, cohort=str(cohort), model_uri=loaded.uri, model_version=loaded.version,
        model_family=profile["family"], training_run_id=loaded.run_id,
        n_input=len(ingested.subjects), n_scored=len(scored), rejected=rejected,
        n_predicted_responders=counts["responders"], n_ood_range=counts["ood_range"],
        n_ood_multivariate=counts["ood_multivariate"],
        distribution=summary["score_distribution"], drift=statistics, run_id=run_id,
        tracking_uri=uri, experiment=config.tracking.experiment,
        seconds=time.perf_counter() - started, notes=notes)
