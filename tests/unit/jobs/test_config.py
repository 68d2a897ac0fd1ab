"""Config: every kind of bad config names its key; overrides merge by key; hash is stable."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs import config as config_mod
from jobs.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_default_config_has_the_product_weights() -> None:
    cfg = config_mod.load_config()
    assert cfg.weights.model_dump() == {
        "quiz": 0.25,
        "interests": 0.20,
        "rating_quality": 0.15,
        "rating_fit": 0.10,
        "newness": 0.10,
        "proximity": 0.20,
    }
    assert cfg.signals.neutral_value == 0.5
    assert cfg.signals.newness_half_life_days == 30
    assert cfg.scoring.top_k == 200


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("weights:\n  quiz: -0.1\n", "weights.quiz: Input should be greater than or equal to 0"),
        ("weights:\n  quizz: 0.1\n", "weights.quizz: Extra inputs are not permitted"),
        ("scoring:\n  top_k: many\n", "scoring.top_k: Input should be a valid integer"),
        ("bogus_section: {}\n", "bogus_section: Extra inputs are not permitted"),
        ("scoring:\n  top_k: 900\n", "scoring.top_k (900) must be <= candidates.quiz_k"),
        ("runner:\n  lease_s: 1\n", "runner: Value error, lease_s (1.0) must exceed"),
    ],
)
def test_bad_override_names_the_key(tmp_path: Path, yaml_text: str, expected: str) -> None:
    path = write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as info:
        config_mod.load_config([path])
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_missing_version_is_an_error(tmp_path: Path) -> None:
    base = write(tmp_path, "weights:\n  quiz: 1\n", "base.yaml")
    with pytest.raises(ConfigError, match="algorithm_version: Field required"):
        config_mod.load_config(base=base)


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        config_mod.load_config([write(tmp_path, "weights: [1, 2\n")])
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        config_mod.load_config([write(tmp_path, "- 1\n- 2\n")])
    with pytest.raises(ConfigError, match="cannot read config file"):
        config_mod.load_config([tmp_path / "missing.yaml"])


def test_override_merges_by_key_and_changes_the_hash(tmp_path: Path) -> None:
    default = config_mod.load_config()
    exp = config_mod.load_config(
        [write(tmp_path, "algorithm_version: v2-exp\nweights:\n  proximity: 0.5\n")]
    )
    assert exp.weights.proximity == 0.5
    assert exp.weights.quiz == default.weights.quiz  # untouched keys keep the default
    assert exp.algorithm_version == "v2-exp"
    assert exp.content_hash != default.content_hash
    assert config_mod.load_config().content_hash == default.content_hash
    assert len(default.content_hash) == 16


def test_config_is_immutable() -> None:
    cfg = config_mod.load_config()
    with pytest.raises(Exception, match="frozen"):
        cfg.weights.quiz = 1.0  # type: ignore[misc]
