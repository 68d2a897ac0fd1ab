"""Config: every kind of bad config names its key; overrides merge by key; hash is stable."""

from __future__ import annotations

import math
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from jobs import config as config_mod
from jobs.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_default_config_has_the_product_weights() -> None:
    cfg = config_mod.load_config()
    assert cfg.weights.model_dump() == {
        "quiz": 0.15,
        "interests": 0.10,
        "rating_quality": 0.10,
        "rating_fit": 0.10,
        "newness": 0.05,
        "proximity": 0.10,
        "appeal": 0.20,
        "reciprocity": 0.20,
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
        ("runner:\n  lease_s: 1\n", "runner: lease_s (1.0) must exceed"),
        (
            "scoring:\n  reciprocal: {enabled: true, combine: calibrated}\n",
            "combine 'calibrated' needs scoring.reciprocal.calibration",
        ),
        (
            "scoring:\n  reciprocal:\n    combine: calibrated\n    calibration: {intercept: -1, "
            "scale: 0, viewer_rate: 1, default_rate: 0.4}\n",
            "scoring.reciprocal.calibration.scale: Input should be greater than 0",
        ),
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


def _float_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted keys of every float setting of ``model`` and its sections, found from the types."""

    def mentions(annotation: Any, kind: type) -> bool:
        return annotation is kind or any(mentions(arg, kind) for arg in typing.get_args(annotation))

    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _float_keys(annotation, f"{prefix}{name}.")
        elif typing.get_origin(annotation) is dict and mentions(annotation, float):
            keys.append(f"{prefix}{name}.any_name")  # a mapping of names to numbers
        elif mentions(annotation, float):
            keys.append(f"{prefix}{name}")
    return keys


FLOAT_KEYS = _float_keys(config_mod.Config)


def test_the_float_keys_are_found_from_the_model() -> None:
    # The walk below must not be vacuous: the keys of the issue are among what it finds.
    assert {"weights.quiz", "ratings.prior_weight", "candidates.geo_cell_deg"} <= set(FLOAT_KEYS)
    assert "scoring.exposure_cap.penalty" in FLOAT_KEYS and "scoring.top_k" not in FLOAT_KEYS
    assert "ratings.dimension_weights.any_name" in FLOAT_KEYS


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
def test_non_finite_number_is_refused_for_every_float_key(
    tmp_path: Path, key: str, value: float
) -> None:
    """Regression (issue 9, item 6): `weights.quiz: .inf` and `ratings.prior_weight: .inf`
    passed validation (inf is >= 0) and crashed scoring with a traceback."""
    data: dict[str, Any] = {}
    *sections, leaf = key.split(".")
    node = data
    for section in sections:
        node = node.setdefault(section, {})
    node[leaf] = value
    path = write(tmp_path, yaml.safe_dump(data))
    assert (".inf" in path.read_text()) or (".nan" in path.read_text())
    with pytest.raises(ConfigError) as info:
        config_mod.load_config([path])
    assert f"{config_mod.DEFAULT_CONFIG} + {path}: {key}: Input should be a finite number" in str(
        info.value
    )


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[3] / "configs" / "experiments").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_every_shipped_experiment_loads_and_builds_its_scorer(path: Path) -> None:
    """A shipped experiment (tune's output among them) merges over the default, validates,
    and gives the match job its settings: a calibrated one with its fitted model."""
    from compute import scoring
    from jobs.match import core as match

    cfg = config_mod.load_config([path])
    params = match.settings_from_config(cfg).scoring
    assert params.fusion == cfg.scoring.reciprocal.combine
    if scoring.is_calibrated(params.fusion):
        assert params.calibration is not None and params.calibration.scale > 0
