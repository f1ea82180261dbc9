"""Recipe: score a new cohort with a logged model.

model (found by MLflow in a process of its own, loaded here; meanwhile the cohort's
files are read and split in chunks) -> each chunk (in parallel processes, forked with
the files and the model): ingest with the model's own contract and score (probability,
interval, class, reasons, out-of-distribution flags) -> in order: write, count drift
and rejects -> rejects, accounting (checked alongside), figures, summary -> one rename
makes the output appear -> an MLflow run in the scoring experiment (by MLflow's process).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from csf_responder import scoring, tracking
from csf_responder.config import ScoreConfig, load_config
from csf_responder.execution import ProcessPool
from csf_responder.ingest import ScoringRead
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


def _figures():
    """The figures module with matplotlib loaded and its fonts read (about 0.3 s), in a
    thread while the workers score, rather than after they end."""
    from csf_responder import figures

    figures.warm_up()
    return figures


def run(*, cohort: Path, config_path: Path, overrides: list[str], reporter: Reporter,
        model: str | None = None, out: Path | None = None, force: bool = False,
        explain_plots: int = 0) -> ScoreOutcome:
    started = time.perf_counter()
    config, _ = load_config(config_path, ScoreConfig, overrides=overrides)
    now = datetime.now()
    target = out or default_out(config.out_dir, cohort, now)
    # MLflow works in a process of its own: its imports and its store's (a CPU second)
    # and the model's lookup run alongside the reading and the loader's imports here
    with ProcessPool(1, name="csf-mlflow") as mlflow_side:
        setting_up = mlflow_side.submit(tracking.setup_tracking, config.tracking.uri,
                                        artifact_root=config.tracking.artifact_root,
                                        experiment=config.tracking.experiment)
        lookup = mlflow_side.submit(tracking.find_scoring_model, model or config.model)
        with StagedDirectory(target, force=force) as staging, \
                ScoringRead(cohort, chunk_size=config.chunk_size) as reading:  # started now
            tracking.import_model_loader()  # meanwhile
            uri, found = mlflow_side.result(setting_up), mlflow_side.result(lookup)
            profile = found.profile
            _, indication = scoring.contract_specs(profile)
            reading.name_visits(indication)  # the model's contract names the visits file
            loaded = tracking.load_scoring_model(found)
            scorer = scoring.Scorer(loaded.model, profile, loaded.interval_models,
                                    n_reasons=config.n_reasons)
            files = reading.files()
            drift = scoring.DriftAccumulator(profile["drift"])
            stream = TableStream(staging, "scores")
            tally = scoring.ScoringTally()
            explained = 0
            with scoring.scoring_pool(files, scorer, n_jobs=config.n_jobs) as pool, \
                    ThreadPoolExecutor(1, thread_name_prefix="figures") as drawing, \
                    reporter.progress(None, label="scoring patients") as advance:
                plotting = drawing.submit(_figures)  # the workers are forked: threads may start
                chunks = scoring.score_chunks(files, scorer, pool=pool,
                                              drop_columns=config.drop_columns,
                                              keep_rows=explain_plots)
                for chunk in chunks:
                    reporter.notes(tally.new_notes(chunk.notes))
                    drift.add(chunk.drift_values, chunk.scores["probability"].to_numpy())
                    if len(chunk.scores):
                        stream.write(chunk.scores)
                    tally.add(chunk)
                    if explained < explain_plots and len(chunk.head) and profile["features"]:
                        figures = plotting.result()
                        shown = chunk.head.head(explain_plots - explained)
                        explained += len(shown)
                        values, labels, base = scorer.explain(shown)
                        for i, subject in enumerate(shown["subject_id"]):
                            figures.shap_waterfall_plot(
                                values.iloc[i], list(labels.iloc[i]), base=float(base[i]),
                                path=staging / "explanations" / f"{subject}.png",
                                title=f"Why: {subject} ({profile['family']})")
                    advance(len(chunk.subjects))
            stream.close(empty=scoring.empty_scores(config.n_reasons))
            figures = plotting.result()
            csf_file = chunk.source.file("csf.csv")
            notes = [*tally.notes, *scoring.check_inputs(tally.has_values(), profile,
                                                         file=csf_file)]
            reporter.notes(notes[len(tally.notes):])
            rejects = tally.rejects()
            # alongside the writing below (Arrow and hashlib work without the interpreter
            # lock): every patient in exactly one of scores and rejects, checked before the
            # output appears; the input files' digest
            with ThreadPoolExecutor(2, thread_name_prefix="alongside") as alongside:
                accounted = alongside.submit(scoring.check_accounting, tally.subjects(),
                                             tally.scored(), rejects)
                digest = alongside.submit(cohort_digest, chunk.source)
                rejects.to_csv(staging / "rejects.csv", index=False)
                tally.input_rejects().to_csv(staging / "input_rejects.csv", index=False)
                tally.accounting().to_csv(staging / "accounting.csv", index=False)
                statistics = drift.statistics()
                drift_table = pd.DataFrame([{"column": c, **v} for c, v in statistics.items()],
                                           columns=["column", "psi", "ks", "ks_p", "n"])
                drift_table.to_csv(staging / "drift.csv", index=False)
                if len(drift_table):
                    figures.drift_plot(drift_table, path=staging / "drift.png",
                                       title=f"CSF drift vs training: {cohort.name}")
                rejected = rejects["rule"].value_counts().to_dict()
                summary = {
                    "cohort": str(cohort), "data_digest": digest.result(),
                    "scored_at": now.isoformat(timespec="seconds"),
                    "model": {"uri": loaded.uri, "name": loaded.name, "version": loaded.version,
                              "family": profile["family"], "training_run_id": loaded.run_id,
                              "threshold": profile["threshold"],
                              "interval_level": profile["interval_level"],
                              "n_interval_models": len(loaded.interval_models)},
                    "counts": {"input_patients": tally.n_input, "scored": tally.n_scored,
                               "rejected": len(rejects), "rejected_by_rule": rejected,
                               "predicted_responders": tally.responders,
                               "ood_range": tally.ood_range,
                               "ood_multivariate": tally.ood_multivariate, "chunks": tally.chunks},
                    "score_distribution": drift.score_distribution(),
                    "drift": statistics, "notes": notes,
                }
                (staging / "summary.json").write_text(json.dumps(summary, indent=1),
                                                      encoding="utf-8")
                accounted.result()
        run_id = mlflow_side.result(mlflow_side.submit(
            tracking.log_scoring_run,
            name=f"score {cohort.resolve().name} {now:%Y-%m-%d %H:%M}", summary=summary,
            files=[target / name for name in ("summary.json", "drift.png", "drift.csv",
                                               "accounting.csv")]))
    return ScoreOutcome(
        out=target, cohort=str(cohort), model_uri=loaded.uri, model_version=loaded.version,
        model_family=profile["family"], training_run_id=loaded.run_id,
        n_input=tally.n_input, n_scored=tally.n_scored, rejected=rejected,
        n_predicted_responders=tally.responders, n_ood_range=tally.ood_range,
        n_ood_multivariate=tally.ood_multivariate,
        distribution=summary["score_distribution"], drift=statistics, run_id=run_id,
        tracking_uri=uri, experiment=config.tracking.experiment,
        seconds=time.perf_counter() - started, notes=notes)
