"""Reference for the training speed target (issue 4): the nested search of ``make train``,
written plainly with scikit-learn and nothing else.

For every model family of the config: ``GridSearchCV`` (inner stratified K-fold, ROC AUC)
inside ``cross_val_score`` over the same repeated stratified outer folds as ``make train``
(``validation.n_splits`` x ``validation.n_repeats``, ``seed``), outer folds on ``--n-jobs``
processes (2: the project machine's cores). Then the two references ``make train`` also
fits: prevalence only (plain ``cross_val_score``) and clinical only (the family with the
best mean fold AUC, without CSF features, nested-searched the same way). No MLflow, no
bootstrap, no SHAP, no final refit, no logging. Prints the mean fold AUC of each and the
wall time of the whole process, imports included.

The data handling is the project's own (config loading, ingest, labelled MSC patients,
model Pipelines), so both sides fit the same models on the same rows; the cross-validation
is scikit-learn's, not ``csf_responder.validation``'s.

    .venv/bin/python benchmarks/reference_nested.py [--config configs/train.yaml]
        [--set key.path=value ...] [--n-jobs 2] [--out reference.json]
"""

from __future__ import annotations

import time

START = time.perf_counter()  # before the heavy imports: they count, as in make train

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from bench_data import add_config_arguments, labelled_rows  # noqa: E402
from sklearn.model_selection import (  # noqa: E402
    GridSearchCV,
    RepeatedStratifiedKFold,
    StratifiedKFold,
    cross_val_score,
)

from csf_responder.models import make_pipeline, prevalence_pipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--n-jobs", type=int, default=2, help="processes for the outer folds")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()

    config, data = labelled_rows(args)
    X, y, v = data.X, data.y, config.validation
    outer = RepeatedStratifiedKFold(n_splits=v.n_splits, n_repeats=v.n_repeats,
                                    random_state=config.seed)

    def nested(spec, csf=True):
        pipeline = make_pipeline(spec, panel=config.panel, indication=config.indication,
                                 features=config.features, seed=config.seed, csf=csf)
        if spec.search:
            inner = StratifiedKFold(n_splits=v.inner_splits, shuffle=True,
                                    random_state=config.seed)
            grid = {f"model__{k}": list(vals) for k, vals in spec.search.items()}
            pipeline = GridSearchCV(pipeline, grid, scoring="roc_auc", cv=inner, n_jobs=1,
                                    error_score="raise")
        return cross_val_score(pipeline, X, y, cv=outer, scoring="roc_auc",
                               n_jobs=args.n_jobs, error_score="raise")

    scores, seconds = {}, {}
    for name, spec in config.models.items():
        begin = time.perf_counter()
        scores[name] = nested(spec)
        seconds[name] = time.perf_counter() - begin
    best = max(scores, key=lambda name: scores[name].mean())
    begin = time.perf_counter()
    scores["prevalence"] = cross_val_score(prevalence_pipeline(), X, y, cv=outer,
                                           scoring="roc_auc", n_jobs=args.n_jobs,
                                           error_score="raise")
    seconds["prevalence"] = time.perf_counter() - begin
    begin = time.perf_counter()
    scores["clinical_only"] = nested(config.models[best], csf=False)
    seconds["clinical_only"] = time.perf_counter() - begin
    total = time.perf_counter() - START

    print(f"{len(y)} labelled MSC patients; outer {v.n_splits}x{v.n_repeats}, "
          f"inner {v.inner_splits}, n_jobs={args.n_jobs}; clinical only: {best} without CSF")
    print(f"{'model':<16}{'mean fold AUC':>14}{'sd':>7}{'seconds':>9}")
    for name, values in scores.items():
        print(f"{name:<16}{np.mean(values):>14.3f}{np.std(values):>7.3f}"
              f"{seconds[name]:>9.1f}")
    print(f"total wall time {total:.1f} s (imports and ingest included)")
    if args.out is not None:
        args.out.write_text(json.dumps({
            "seconds": round(total, 2),
            "clinical_only_family": best,
            "mean_fold_auc": {k: round(float(np.mean(s)), 4) for k, s in scores.items()},
            "family_seconds": {k: round(s, 2) for k, s in seconds.items()},
            "n_labelled": len(y),
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
