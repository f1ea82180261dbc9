"""Tracking helpers that need no MLflow store."""

from __future__ import annotations

from csf_responder.tracking import config_digest, flatten


def test_config_digest_ignores_key_order_and_sees_every_value():
    config = {"seed": 42, "validation": {"n_splits": 5, "ci_level": 0.95},
              "features": {"analytes": ["TGF-beta1", "MCP-1"]}}
    reordered = {"features": {"analytes": ["TGF-beta1", "MCP-1"]},
                 "validation": {"ci_level": 0.95, "n_splits": 5}, "seed": 42}
    assert config_digest(config) == config_digest(reordered)
    assert len(config_digest(config)) == 16
    changed = {**config, "validation": {"n_splits": 10, "ci_level": 0.95}}
    swapped = {**config, "features": {"analytes": ["MCP-1", "TGF-beta1"]}}  # order of a list
    assert len({config_digest(c) for c in (config, changed, swapped)}) == 3


def test_flatten_gives_one_param_per_leaf():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {"a.b": "1", "a.c": "[1, 2]",
                                                              "d": "x"}
