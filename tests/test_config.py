"""Tests of configuration loading in :mod:`csf_responder.config`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from csf_responder.config import TrainConfig, apply_overrides, load_config
from csf_responder.errors import ConfigError


@pytest.fixture
def train_yaml(tmp_path, configs_dir) -> Path:
    """A private copy of configs/train.yaml and the panels it includes (a local override,
    if any, is not copied)."""
    target = tmp_path / "train.yaml"
    shutil.copyfile(configs_dir / "train.yaml", target)
    for included in ("panels", "indications", "models"):
        shutil.copytree(configs_dir / included, tmp_path / included)
    return target


def edit(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert text.count(old) == 1, f"fixture edit {old!r} is ambiguous or absent"
    path.write_text(text.replace(old, new))
    return path


def config_error(path, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, TrainConfig, **kwargs)
    return str(info.value)


# ------------------------------------------------------------------------ loading
def test_real_train_config_loads(configs_dir):
    config, resolved = load_config(configs_dir / "train.yaml", TrainConfig)
    assert isinstance(config, TrainConfig)
    assert [a.name for a in config.panel.analytes][:2] == ["TGF-beta1", "MCP-1"]
    assert config.panel.analyte("MCP-1").column_key == "mcp1"
    assert ("TGF-beta1", "MCP-1") in config.features.ratios
    assert config.labels.min_visits_lead_in >= 2
    assert {m.family for m in config.models.values()} <= {"logistic", "xgboost"}
    assert resolved["seed"] == config.seed


def test_copy_loads_to_the_values_written(train_yaml):
    config, resolved = load_config(train_yaml, TrainConfig)
    written = yaml.safe_load(train_yaml.read_text())
    included = {key: yaml.safe_load((train_yaml.parent / written[key]).read_text())
                for key in ("panel", "indication")}
    models = {name: yaml.safe_load((train_yaml.parent / path).read_text())
              for name, path in written["models"].items()}
    assert resolved == {**written, **included, "models": models}  # included, in place
    assert config.labels.cutoff == 0.5
    assert config.panel.timepoints == ["baseline", "week4"]


def test_config_is_frozen(train_yaml):
    config, _ = load_config(train_yaml, TrainConfig)
    with pytest.raises(ValueError):
        config.seed = 1


def test_unknown_key_is_named_with_the_file(train_yaml):
    edit(train_yaml, "  cutoff: 0.5", "  cutof: 0.5")
    message = config_error(train_yaml)
    assert str(train_yaml) in message
    assert "unknown key 'labels.cutof'" in message


def test_unknown_top_level_key(train_yaml):
    train_yaml.write_text(train_yaml.read_text() + "sead: 1\n")
    message = config_error(train_yaml)
    assert "unknown key 'sead'" in message


def test_missing_key_is_named(train_yaml):
    edit(train_yaml, "  lead_in_days: 98", "")
    message = config_error(train_yaml)
    assert str(train_yaml) in message
    assert "missing key 'labels.lead_in_days'" in message


def test_wrong_type_is_named(train_yaml):
    edit(train_yaml, "  n_splits: 5", "  n_splits: five")
    message = config_error(train_yaml)
    assert str(train_yaml) in message
    assert "key 'validation.n_splits'" in message


def test_out_of_range_value_is_named(train_yaml):
    edit(train_yaml, "  cutoff: 0.5", "  cutoff: -0.5")
    assert "key 'labels.cutoff'" in config_error(train_yaml)


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("seed: 42\ncohort:\n  path: data: raw\n")     # line 3 is broken
    message = config_error(path)
    assert message.startswith(f"{path} line 3")


def test_file_not_found(tmp_path):
    missing = tmp_path / "nope.yaml"
    message = config_error(missing)
    assert str(missing) in message
    assert "not found" in message


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- seed\n- 42\n")
    assert "mapping" in config_error(path)


def test_ratio_of_analyte_outside_the_features_is_an_error(train_yaml):
    edit(train_yaml, "    - [TGF-beta1, MCP-1]", "    - [TGF-beta1, IL-6]")
    message = config_error(train_yaml)
    assert str(train_yaml) in message
    assert "'IL-6'" in message
    assert "features.analytes" in message


def test_feature_analyte_outside_the_panel_is_an_error(train_yaml):
    edit(train_yaml, "analytes: [TGF-beta1, MCP-1, VEGF, Angiogenin]",
         "analytes: [TGF-beta1, MCP-1, VEGF, IL-99]")
    message = config_error(train_yaml)
    assert "'IL-99'" in message
    assert "not in the panel" in message


# ---------------------------------------------------------------------- overrides
@pytest.fixture
def data() -> dict:
    return {
        "seed": 42,
        "labels": {"cutoff": 0.5, "horizon_months": 6},
        "features": {"changes": True, "clinical": ["age"]},
        "panel": {"timepoints": ["baseline", "week4"]},
    }


def test_overrides_are_parsed_as_yaml(data):
    result = apply_overrides(data, [
        "seed=7", "features.changes=false", "labels.cutoff=0.4",
        "panel.timepoints=[baseline, week8]", "features.clinical=[age, sex]",
    ])
    assert result["seed"] == 7 and isinstance(result["seed"], int)
    assert result["features"]["changes"] is False
    assert result["labels"]["cutoff"] == 0.4
    assert result["panel"]["timepoints"] == ["baseline", "week8"]
    assert result["features"]["clinical"] == ["age", "sex"]
    assert result["labels"]["horizon_months"] == 6


def test_overrides_do_not_mutate_their_input(data):
    before = yaml.safe_load(yaml.safe_dump(data))
    apply_overrides(data, ["labels.cutoff=0.4", "features.clinical=[sex]"])
    assert data == before


def test_value_may_contain_an_equals_sign(data):
    result = apply_overrides(data, ["features.clinical=[a=b]"])
    assert result["features"]["clinical"] == ["a=b"]


@pytest.mark.parametrize(
    ("override", "named"),
    [("labels.cutof=0.4", "labels.cutof"), ("sead=1", "sead"),
     ("seed.value=1", "seed.value"), ("label.cutoff=0.4", "label")],
)
def test_unknown_dotted_key_is_named(data, override, named):
    with pytest.raises(ConfigError) as info:
        apply_overrides(data, [override])
    assert f"unknown key '{named}'" in str(info.value)


def test_override_without_equals_sign(data):
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides(data, ["labels.cutoff"])


def test_load_config_applies_overrides(train_yaml):
    config, resolved = load_config(train_yaml, TrainConfig,
                                   overrides=["labels.horizon_months=4", "seed=7"])
    assert config.labels.horizon_months == 4
    assert config.seed == 7
    assert resolved["labels"]["horizon_months"] == 4


def test_override_of_wrong_type_is_named(train_yaml):
    message = config_error(train_yaml, overrides=["validation.n_splits=many"])
    assert "key 'validation.n_splits'" in message


# ------------------------------------------------------------------ local override
def test_local_file_is_merged_over_the_base(train_yaml):
    (train_yaml.parent / "train.local.yaml").write_text(
        "seed: 7\nlabels:\n  horizon_months: 4\n"
    )
    config, resolved = load_config(train_yaml, TrainConfig)
    assert config.seed == 7
    assert config.labels.horizon_months == 4
    assert config.labels.cutoff == 0.5           # sibling keys of the base survive
    assert resolved["labels"]["lead_in_days"] == 98


def test_set_overrides_win_over_the_local_file(train_yaml):
    (train_yaml.parent / "train.local.yaml").write_text("seed: 7\n")
    config, _ = load_config(train_yaml, TrainConfig, overrides=["seed=9"])
    assert config.seed == 9


def test_local_file_of_another_config_is_not_merged(train_yaml):
    (train_yaml.parent / "simulate.local.yaml").write_text("seed: 7\n")
    config, _ = load_config(train_yaml, TrainConfig)
    assert config.seed == 42


def test_typo_in_local_file_names_the_local_file(train_yaml):
    local = train_yaml.parent / "train.local.yaml"
    local.write_text("labels:\n  horizon_month: 4\n")
    message = config_error(train_yaml)
    assert "unknown key 'labels.horizon_month'" in message
    assert str(local) in message


# ----------------------------------------------------------------------- includes
def test_set_swaps_an_included_file_and_reaches_into_it(configs_dir):
    config, resolved = load_config(
        configs_dir / "train.yaml", TrainConfig,
        overrides=["indication=indications/msa.yaml", "indication.score.max=100",
                   "features.clinical=[score_baseline, age, subtype]"])
    assert config.indication.name == "MSA"
    assert config.indication.score.higher_is_better is False
    assert config.indication.score.max == 100
    assert resolved["indication"]["visits_file"] == "umsars.csv"


def test_clinical_feature_outside_the_indication_is_named(configs_dir):
    with pytest.raises(ConfigError, match="features.clinical names 'onset_site'"):
        load_config(configs_dir / "train.yaml", TrainConfig,
                    overrides=["indication=indications/msa.yaml"])


def test_missing_included_file_is_named(configs_dir):
    with pytest.raises(ConfigError, match="indications/nope.yaml: config file not found"):
        load_config(configs_dir / "train.yaml", TrainConfig,
                    overrides=["indication=indications/nope.yaml"])


def test_label_column_goes_with_the_column_source(configs_dir):
    with pytest.raises(ConfigError, match="labels.column is set exactly when"):
        load_config(configs_dir / "train.yaml", TrainConfig,
                    overrides=["labels.source=column"])
    config, _ = load_config(configs_dir / "train.yaml", TrainConfig,
                            overrides=["labels.source=column", "labels.column=responded"])
    assert config.labels.column == "responded"


def test_model_families_come_from_their_files_with_a_search(configs_dir):
    config, _ = load_config(configs_dir / "train.yaml", TrainConfig, overrides=[
        "models={l1: models/logistic_l1.yaml, en: models/elastic_net.yaml, "
        "rf: models/random_forest.yaml}"])
    assert {name: m.family for name, m in config.models.items()} == {
        "l1": "logistic", "en": "logistic", "rf": "random_forest"}
    assert set(config.models["en"].search) == {"C", "l1_ratio"}


def test_a_parameter_both_fixed_and_searched_is_an_error(configs_dir):
    with pytest.raises(ConfigError, match=r"\['l1_ratio'\] set both in params and in search"):
        load_config(configs_dir / "train.yaml", TrainConfig,
                    overrides=["models.logistic_l2.search={l1_ratio: [0, 1]}"])
