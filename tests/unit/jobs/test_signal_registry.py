"""The jobs side follows the signal registry: weights, YAML defaults, match_scores columns."""

from __future__ import annotations

import yaml

from compute import scoring, signals
from jobs import config as config_mod
from jobs.match import core as match
from jobs.storage import schema


def test_subscore_columns_follow_the_registry():
    """A new signal needs a migration adding its s_<key> column: this fails until then."""
    assert schema.SUBSCORE_COLUMNS == signals.SIGNAL_KEYS
    columns = [c.name for c in schema.match_scores.columns if c.name.startswith("s_")]
    assert columns == [f"s_{key}" for key in signals.SIGNAL_KEYS]


def test_weights_model_is_the_registry():
    fields = config_mod.Weights.model_fields
    assert tuple(fields) == signals.SIGNAL_KEYS
    assert {k: f.default for k, f in fields.items()} == {s.key: s.weight for s in signals.SIGNALS}


def test_default_yaml_states_every_registered_weight():
    data = yaml.safe_load(config_mod.DEFAULT_CONFIG.read_text())
    assert data["weights"] == {s.key: s.weight for s in signals.SIGNALS}


def test_settings_carry_each_yaml_weight_to_its_signal():
    config = config_mod.load_config()
    weights = {key: float(i + 1) for i, key in enumerate(signals.SIGNAL_KEYS)}
    changed = config_mod.from_mapping({**config.model_dump(), "weights": weights})
    got = match.settings_from_config(changed).scoring.weights
    assert got == scoring.SignalWeights(**{s.name: weights[s.key] for s in signals.SIGNALS})
    for s in signals.SIGNALS:
        assert got[s.name] == weights[s.key]
