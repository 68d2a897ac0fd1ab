"""Typed, immutable configuration loaded from YAML (``configs/default.yaml`` + overrides).

Every section is a frozen pydantic model that forbids unknown keys, so a misspelt key is an
error. ``load_config`` merges experiment files over the default by key, validates, and raises
``ConfigError`` with one line per problem (``file: key.path: message``) before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    create_model,
    model_validator,
)

from compute import signals
from jobs.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"

NonNegative = Annotated[float, Field(ge=0)]


def _non_negative_or_auto(value: Any) -> float | str:
    """A finite number ≥ 0, or the word ``auto`` (one message for each way to miss)."""
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"Input should be a number ≥ 0 or 'auto'; got {value!r}")
    if not math.isfinite(value):
        raise ValueError("Input should be a finite number")
    if value < 0:
        raise ValueError("Input should be greater than or equal to 0")
    return float(value)


NonNegativeOrAuto = Annotated[float | str, PlainValidator(_non_negative_or_auto)]
Positive = Annotated[float, Field(gt=0)]
Unit = Annotated[float, Field(ge=0, le=1)]


class _Model(BaseModel):
    # allow_inf_nan=False: YAML's .inf/.nan would pass every bound a section states (inf
    # is >= 0) and then crash or poison scoring; every float of every section is finite.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class _WeightsModel(_Model):
    """Weight of each signal in the combined score (normalized by their sum).

    One key per signal of the registry ``compute.signals.SIGNALS`` (its ``Signal.key``, with
    its registered default), so a new signal needs no edit here: :data:`Weights` is built
    from the registry.
    """

    @model_validator(mode="after")
    def _some_weight(self) -> _WeightsModel:
        if sum(self.model_dump().values()) <= 0:
            raise ValueError("at least one weight must be > 0")
        return self

    def by_signal(self) -> dict[str, float]:
        """Weight per signal name of compute/ (``SignalWeights`` keywords)."""
        return {s.name: getattr(self, s.key) for s in signals.SIGNALS}


Weights = create_model(
    "Weights",
    __base__=_WeightsModel,
    __module__=__name__,
    **{s.key: (NonNegative, s.weight) for s in signals.SIGNALS},  # type: ignore[call-overload]
)


class Signals(_Model):
    neutral_value: Unit = 0.5
    newness_half_life_days: Positive = 30.0
    proximity_scale_km: Positive = 25.0


class QuizJob(_Model):
    """The quiz job (``jobs.signals.quiz``): answers → ``user_quiz_vectors``."""

    # Fewer valid answers than this: no vector (counted as too_few_answers).
    min_answers: Annotated[int, Field(ge=1)] = 5


class InterestJob(_Model):
    """The interest job (``jobs.signals.interests``): index rows and dense vectors."""

    dim: Annotated[int, Field(ge=2, le=4096)] = 64
    # Seeds the hashing projection of catalogues larger than dim; a uint64.
    projection_seed: Annotated[int, Field(ge=0, lt=2**64)] = 20261128
    idf: bool = True


class RatingJob(_Model):
    """The ratings job (``jobs.signals.ratings``): aggregates and preferences."""

    prior_weight: NonNegative = 10.0
    # Distinct rated profiles a rater needs; one profile has no covariance, hence >= 2.
    min_ratings_for_preference: Annotated[int, Field(ge=2)] = 5
    # Weight of each rating dimension (by its rating_dimensions.name) in a profile's
    # rating_quality, as the match job reads it; normalized by their sum, a dimension not
    # named weighs 0. Empty (the default): every dimension alike. `matchjobs tune` fits
    # them from observed decisions; the ratings job's tables do not depend on them.
    dimension_weights: dict[str, NonNegative] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _some_dimension_weight(self) -> RatingJob:
        if self.dimension_weights and sum(self.dimension_weights.values()) <= 0:
            raise ValueError("dimension_weights: at least one weight must be > 0 (or none given)")
        return self


class LikeJob(_Model):
    """The likes job (``jobs.signals.likes``): like rates and the taste/appeal model."""

    # Length of every taste and appeal vector: dim − 2 taste components, then two rate
    # coordinates (compute.likes).
    dim: Annotated[int, Field(ge=2, le=256)] = 16
    # Likes + passes a user must have given (taste) or received (appeal) for a vector.
    min_decisions: Annotated[int, Field(ge=1)] = 5
    # Pseudo-decisions at the global like rate in the shrunk like rates.
    prior_weight: NonNegative = 10.0
    # How strongly a pass counts against, a like counting +1.
    pass_weight: Positive = 1.0
    # Subtracted from every singular value of the decision matrix (floored at 0); "auto":
    # chosen on held-out decisions each run (compute.likes.choose_threshold).
    regularisation: NonNegativeOrAuto = "auto"
    # Seeds the sparse solver's start vector (large populations): reruns are identical.
    seed: Annotated[int, Field(ge=0)] = 0


class Filters(_Model):
    default_max_distance_km: Positive = 100.0
    min_age: Annotated[int, Field(ge=18)] = 18
    max_age: Annotated[int, Field(le=130)] = 120

    @model_validator(mode="after")
    def _ages(self) -> Filters:
        if self.min_age > self.max_age:
            raise ValueError(f"min_age ({self.min_age}) must be <= max_age ({self.max_age})")
        return self


class Candidates(_Model):
    """Candidate generation (``compute.candidates.CandidateParams``).

    Users who can reach fewer than ``exact_below`` candidates are ranked exactly by the
    final score (``top_k + margin`` kept); the others use FAISS neighbour lists.
    """

    quiz_k: Annotated[int, Field(ge=1)] = 200
    interest_k: Annotated[int, Field(ge=1)] = 200
    # Users with neither vector: best-rated, newest compatible users.
    fallback_k: Annotated[int, Field(ge=0)] = 200
    exact_below: Annotated[int, Field(ge=1)] = 1_000_000
    nlist_factor: Annotated[float, Field(gt=0)] = 4.0  # IVF lists = nlist_factor * sqrt(N)
    nprobe: Annotated[int, Field(ge=1)] = 64
    train_points_per_list: Annotated[int, Field(ge=1)] = 64
    # Search partitions: age bands of this width (null: none) and lat/lon cells (null: none).
    age_band_years: Annotated[int, Field(ge=1, le=120)] | None = 5
    geo_cell_deg: Annotated[float, Field(gt=0, le=180)] | None = 1.0
    margin: Annotated[int, Field(ge=0)] = 16
    growth: Annotated[int, Field(ge=2)] = 4
    # Seeds IVF training; the nightly and single-user runs build identical indexes from it.
    seed: int = 0


class Calibration(_Model):
    """The like model of the ``calibrated*`` combines (compute.scoring.Calibration): written
    by ``matchjobs tune``, never by hand."""

    intercept: float
    scale: Positive
    viewer_rate: NonNegative
    default_rate: Unit


class Reciprocal(_Model):
    enabled: bool = False
    combine: Literal[
        "harmonic", "geometric", "min", "calibrated", "calibrated_harmonic", "calibrated_min"
    ] = "harmonic"
    calibration: Calibration | None = None

    @model_validator(mode="after")
    def _calibrated_needs_its_model(self) -> Reciprocal:
        # compute.scoring.is_calibrated, without importing scipy at config load.
        if self.combine.startswith("calibrated") and self.calibration is None:
            raise ValueError(
                f"combine {self.combine!r} needs scoring.reciprocal.calibration (intercept, "
                "scale, viewer_rate, default_rate), which `matchjobs tune` writes"
            )
        return self


class Dormancy(_Model):
    enabled: bool = False
    grace_days: NonNegative = 14.0
    half_life_days: Positive = 30.0


class ExposureCap(_Model):
    enabled: bool = False
    max_lists: Annotated[int, Field(ge=1)] = 500
    penalty: Unit = 0.5


class Scoring(_Model):
    top_k: Annotated[int, Field(ge=1, le=5000)] = 200
    reciprocal: Reciprocal = Reciprocal()
    dormancy: Dormancy = Dormancy()
    exposure_cap: ExposureCap = ExposureCap()


class Fanout(_Model):
    max_reverse: Annotated[int, Field(ge=0)] = 50


class Feed(_Model):
    score_threshold: Unit = 0.85


class RayConfig(_Model):
    """The nightly's Ray driver (``jobs.match.nightly``)."""

    # false: the nightly scores its shards in-process, one after another (same code).
    enabled: bool = True
    num_actors: Annotated[int, Field(ge=1)] = 2
    num_cpus_per_actor: Annotated[float, Field(gt=0)] = 1.0
    shard_size: Annotated[int, Field(ge=1)] = 2000
    object_store_mb: Annotated[int, Field(ge=75)] = 1024
    max_retries: Annotated[int, Field(ge=0)] = 2


class Retry(_Model):
    """Retries of a shard's write after a transient database error (``jobs.match.nightly``)."""

    # Attempts in all, the first included; 1 disables retries.
    write_attempts: Annotated[int, Field(ge=1, le=20)] = 4
    # Before attempt n+1 the writer waits between d/2 and d, d = min(max, backoff * 2^(n-1)).
    backoff_s: NonNegative = 0.5
    max_backoff_s: NonNegative = 10.0


class Runner(_Model):
    heartbeat_interval_s: Positive = 10.0
    lease_s: Positive = 120.0

    @model_validator(mode="after")
    def _lease(self) -> Runner:
        if self.lease_s <= self.heartbeat_interval_s:
            raise ValueError(
                f"lease_s ({self.lease_s}) must exceed heartbeat_interval_s "
                f"({self.heartbeat_interval_s})"
            )
        return self


class Audit(_Model):
    sample_users: Annotated[int, Field(ge=0)] = 200
    seed: int = 0
    # A nightly match run whose share of active users with a non-empty list is below this
    # is not swapped in (unless --force-swap) and ends as on_low_coverage says.
    min_coverage: Unit = 0.5
    on_low_coverage: Literal["warn", "fail"] = "fail"
    # A nightly whose recall@K audit (its lists against exhaustive scoring of the sample)
    # is below this ends succeeded_with_warnings, the figure in its warning: candidate
    # generation (FAISS lists, for users past candidates.exact_below) is missing pairs.
    min_recall: Unit = 0.98


class Worker(_Model):
    poll_interval_s: Positive = 1.0
    batch_size: Annotated[int, Field(ge=1)] = 100
    max_attempts: Annotated[int, Field(ge=1)] = 3
    # Wait before an event is claimed again: base · 2^(n−1), capped, with jitter.
    backoff_base_s: Positive = 1.0
    backoff_max_s: Positive = 60.0
    # Keep the population in memory between batches, re-reading only the touched users';
    # false: every batch's match run loads its region from the database.
    warm: bool = True
    # Reload the held population from the database at least this often.
    reload_seconds: Positive = 900.0

    @model_validator(mode="after")
    def _backoff(self) -> Worker:
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError(
                f"backoff_max_s ({self.backoff_max_s}) must be >= backoff_base_s "
                f"({self.backoff_base_s})"
            )
        return self


class Storage(_Model):
    """Disk use of the nightly's stage-and-swap (PostgreSQL)."""

    # Keep the partitions of this many most recently swapped versions (the one just
    # swapped included); older versions' partitions are dropped after a successful swap.
    # None: never drop. Every version the app serves must be swapped by its own nightly.
    keep_versions: Annotated[int, Field(ge=1)] | None = None
    # Free disk needed before staging: population × top_k × bytes per row (the version's
    # last partition, else 200) × this factor (index builds sort beside the stage) ...
    disk_estimate_factor: Annotated[float, Field(gt=0)] = 1.5
    # ... plus this reserve left free.
    disk_reserve_bytes: Annotated[int, Field(ge=0)] = 1 << 30
    # The filesystem of the database's data directory, as the driver sees it. None: the
    # server's data_directory, when it is on this host and readable (else not checked).
    disk_path: str | None = None


class Config(_Model):
    algorithm_version: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\w.\-]+$")]
    weights: Weights = Weights()
    signals: Signals = Signals()
    quiz: QuizJob = QuizJob()
    interests: InterestJob = InterestJob()
    ratings: RatingJob = RatingJob()
    likes: LikeJob = LikeJob()
    filters: Filters = Filters()
    candidates: Candidates = Candidates()
    scoring: Scoring = Scoring()
    fanout: Fanout = Fanout()
    feed: Feed = Feed()
    ray: RayConfig = RayConfig()
    retry: Retry = Retry()
    runner: Runner = Runner()
    audit: Audit = Audit()
    worker: Worker = Worker()
    storage: Storage = Storage()

    @model_validator(mode="after")
    def _top_k_fits(self) -> Config:
        pool = self.candidates.quiz_k + self.candidates.interest_k
        if self.scoring.top_k > pool:
            raise ValueError(
                f"scoring.top_k ({self.scoring.top_k}) must be <= candidates.quiz_k + "
                f"candidates.interest_k ({pool})"
            )
        return self

    @property
    def content_hash(self) -> str:
        """First 16 hex digits of the SHA-256 of the canonical JSON of every setting."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``line L, column C: problem`` (1-based, as editors count) from a YAML error."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = "" if mark is None else f"line {mark.line + 1}, column {mark.column + 1}: "
    return where + problem + (f" ({context})" if context else "")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping; got {type(data).__name__}")
    return data


def from_mapping(data: Mapping[str, Any], source: str = "<config>") -> Config:
    """Validate an already-parsed mapping; ``source`` names it in error messages."""
    try:
        return Config.model_validate(dict(data))
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(part) for part in err["loc"]) or "<root>"
            # A validator's own message, without pydantic's "Value error, " in front.
            cause = err.get("ctx", {}).get("error") if err["type"] == "value_error" else None
            lines.append(f"{source}: {loc}: {cause if cause is not None else err['msg']}")
        # The lines above say all the ValidationError does, minus its trailer (input
        # values, a documentation link): it is not kept as the cause.
        raise ConfigError("\n".join(lines)) from None


def load_config(overrides: Sequence[str | Path] = (), base: str | Path | None = None) -> Config:
    """Load ``base`` (default: configs/default.yaml), merge each override file over it by key."""
    base_path = Path(base) if base is not None else DEFAULT_CONFIG
    data = _read_yaml(base_path)
    sources = [str(base_path)]
    for override in overrides:
        path = Path(override)
        data = _deep_merge(data, _read_yaml(path))
        sources.append(str(path))
    return from_mapping(data, source=" + ".join(sources))
