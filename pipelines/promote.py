"""Recipe: move the registry alias to a version by hand, with a recorded reason."""

from __future__ import annotations

from pathlib import Path

from csf_responder.config import TrainConfig, load_config
from csf_responder.registry import PromotionOutcome


def run(*, config_path: Path, overrides: list[str], version: int, reason: str
        ) -> PromotionOutcome:
    from csf_responder import registry, tracking  # MLflow is heavy: loaded only here

    config, _ = load_config(config_path, TrainConfig, overrides=overrides)
    tracking.setup_tracking(config.tracking.uri, artifact_root=config.tracking.artifact_root,
                            experiment=config.tracking.experiment)
    return registry.promote(version=version, reason=reason, spec=config.registry)


def summary(outcome: PromotionOutcome) -> str:
    """One line: which version holds the alias now, what it replaced, why and who."""
    was = (f"was version {outcome.previous_champion}" if outcome.previous_champion is not None
           else "no version held it before")
    if outcome.previous_champion == outcome.version:
        was = "it already held it"
    return (f"{outcome.model_name} version {outcome.version} is now @{outcome.alias} ({was}); "
            f"reason recorded: \"{outcome.reason}\" by {outcome.by} at {outcome.at}")
