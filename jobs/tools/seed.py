"""A deterministic synthetic population with real structure, for demos, tests and benchmarks.

``generate(n_users, seed, now, cities)`` is pure numpy → pandas (randomness only from
``np.random.default_rng(seed)``; same arguments, identical frames); ``write(conn, frames)``
appends the frames to the source tables in the caller's transaction. ``seed(engine, ...)`` is
what ``matchjobs seed`` runs: it draws and writes ``generate_chunks`` one chunk of
``CHUNK_USERS`` users at a time (a million users' frames at once took 6.5 GB), in one
transaction.

The latent model (kept in :class:`Latent` so tests and evaluations can check against it):

- Each user belongs to one of ``N_TYPES`` personality types. A type has a mean answer per quiz
  question and a preference over interest subjects; users answer ``type profile + noise``
  and pick interests mostly from their type's favourite subjects (Zipf popularity inside a
  subject, so IDF matters).
- ``affinity[type_a, type_b]`` in [-1, 1] mixes the correlation of the two types' quiz profiles
  with the cosine of their subject preferences (1 on the diagonal).
- Each profile has a latent quality per rating dimension (a shared "general" factor plus a
  per-dimension one, z-scale); each rater has a bias (harsh/generous, rating points), a taste
  (weights over the dimensions, summing to 1) and a generosity in liking.
- Where users live (:func:`city_layout`): ``realistic`` (the default) spreads them over
  up to 1,000 places (from 50,000 users on; fewer for a smaller population), 50 real US
  metros and the towns around them, with Zipf sizes by rank, so the biggest holds ~8 %;
  ``dense`` is the earlier layout, 20 big US cities with Zipf
  exponent 0.9, the biggest holding ~24 % (the dense metropolis that candidate generation
  must also survive).
- Users meet people of their region (a metro and its towns) whose gender they seek; most of
  those would pass the
  match job's hard filters (both directions), a few do not. Likes/passes/blocks follow
  :func:`like_probability`; some of the people one liked (fewer one passed) were then met and
  rated.

Why one file of ~1,000 lines: the latent model and the generation that draws from it are one
model (each table's draw reads the same latent types and people); the catalogues it draws
from are :mod:`jobs.tools.seed_catalogues`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import itertools
import logging
import time
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pandas as pd
import sqlalchemy as sa

from compute import geo
from jobs import progress
from jobs.storage import migrate, source
from jobs.tools import seed_catalogues as catalogues

logger = logging.getLogger(__name__)

DEFAULT_NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
# Users per chunk that seed() generates and writes at a time (see generate_chunks). The rows
# depend on it; changing it changes every population larger than it.
CHUNK_USERS = 50_000

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# ------------------------------------------------------------------------------ the model

N_TYPES = 12
SECONDS_PER_DAY = 86_400

GENDER_SHARES = (0.485, 0.485, 0.03)  # woman, man, nonbinary
# seeking masks (1 women, 2 men, 4 nonbinary) and their shares, per own gender
ORIENTATIONS: dict[int, tuple[tuple[int, ...], tuple[float, ...]]] = {
    0: ((2, 1, 3, 7), (0.84, 0.05, 0.07, 0.04)),  # straight, lesbian, bi, pan
    1: ((1, 2, 3, 7), (0.88, 0.05, 0.04, 0.03)),  # straight, gay, bi, pan
    2: ((7, 5, 6, 4, 3), (0.40, 0.20, 0.20, 0.10, 0.10)),
}
NO_LOCATION_SHARE = 0.03
INACTIVE_SHARE = 0.08
BRAND_NEW_SHARE = 0.02
TOO_FEW_ANSWERS_SHARE = 0.03
NULL_MAX_DISTANCE_SHARE = 0.10
NULL_INTEREST_WEIGHT_SHARE = 0.12
MAX_DISTANCE_CHOICES = (10.0, 25.0, 50.0, 100.0, 200.0)
MAX_DISTANCE_SHARES = (0.10, 0.30, 0.30, 0.20, 0.10)
DEFAULT_MAX_DISTANCE_KM = 100.0  # what a NULL limit means when deciding who meets whom
HISTORY_DAYS = 730

ENCOUNTERS_PER_USER = 16.0  # people shown to an average user (before reciprocal showings)
RECIPROCAL_SHARE = 0.35  # share of showings where the other person also saw this user
OFF_FILTER_SHARE = 0.03  # showings kept although the pair fails a hard filter

# The likes model (see like_probability).
LIKE_BASE = -0.9
LIKE_AFFINITY = 2.0
LIKE_APPEAL = 1.0
LIKE_DISTANCE_PER_10KM = 0.1
BLOCK_RATE = 0.03

# P(met and rated | decision) by decision, and for mutual likes
MEET_AFTER_LIKE = 0.60
MEET_AFTER_MUTUAL = 0.90
MEET_AFTER_PASS = 0.15
RATING_MISSING = (0.02, 0.02, 0.02, 0.02, 0.07, 0.12)  # per dimension, share left unrated


# ------------------------------------------------------------------------------ where users live

CITY_LAYOUTS = ("realistic", "dense")
DEFAULT_CITIES = "realistic"


@dataclasses.dataclass(frozen=True, eq=False)
class CityLayout:
    """The places users live in, biggest first (row ``i`` = ``Latent.home_city`` ``i``).

    names : tuple[str, ...] — what ``users.city`` holds, unique
    lat, lon : (P,) float64 — centre of each place
    shares : (P,) float64 — P(a user lives there); sums to 1
    jitter_km : (P,) float64 — users live within this distance of the centre
    region : (P,) int64 — the metro a place belongs to (people of one region meet)
    """

    name: str
    names: tuple[str, ...]
    lat: FloatArray
    lon: FloatArray
    shares: FloatArray
    jitter_km: FloatArray
    region: IntArray

    @property
    def n_places(self) -> int:
        return len(self.names)


def city_layout(name: str, n_users: int) -> CityLayout:
    """The layout called ``name`` (one of :data:`CITY_LAYOUTS`) for ``n_users``; seed-free.

    ``dense``: the 20 US cities of ``catalogues.CITIES``, Zipf(0.9) sizes (the biggest holds
    ~24 % of users), 15 km radius each, every city its own region.
    ``realistic``: the biggest ``clip(n_users // USERS_PER_PLACE, MIN_PLACES, N_PLACES)``
    places of one map of ``catalogues.N_PLACES``, with Zipf(``PLACE_ZIPF_EXPONENT``) sizes by
    rank: the real metros of ``catalogues.METROS`` first, then towns drawn from
    ``PLACES_SEED`` around a uniformly chosen metro (their region), named after it. From
    50,000 users on, all 1,000 places are used and the biggest holds ~8 %; a smaller
    population lives in fewer places (a young app is not yet everywhere, and 200 users over
    1,000 places would have almost nobody within reach).
    """
    if name == "realistic":
        n_places = int(
            np.clip(
                n_users // catalogues.USERS_PER_PLACE,
                catalogues.MIN_PLACES,
                catalogues.N_PLACES,
            )
        )
        return _layout(name, n_places)
    return _layout(name, 0)


@functools.cache
def _layout(name: str, n_places: int) -> CityLayout:
    if name == "dense":
        ranks = np.arange(1, len(catalogues.CITIES) + 1, dtype=np.float64)
        city_p = ranks**-catalogues.CITY_ZIPF_EXPONENT
        layout = CityLayout(
            name=name,
            names=tuple(c[0] for c in catalogues.CITIES),
            lat=np.asarray([c[1] for c in catalogues.CITIES]),
            lon=np.asarray([c[2] for c in catalogues.CITIES]),
            shares=city_p / city_p.sum(),
            jitter_km=np.full(len(catalogues.CITIES), catalogues.CITY_JITTER_KM),
            region=np.arange(len(catalogues.CITIES), dtype=np.int64),
        )
    elif name == "realistic":
        full = _realistic_layout()
        shares = full.shares[:n_places] / full.shares[:n_places].sum()
        layout = dataclasses.replace(
            full,
            names=full.names[:n_places],
            lat=full.lat[:n_places],
            lon=full.lon[:n_places],
            shares=shares,
            jitter_km=full.jitter_km[:n_places],
            region=full.region[:n_places],
        )
    else:
        raise ValueError(f"cities must be one of {CITY_LAYOUTS}; got {name!r}")
    for array in (layout.lat, layout.lon, layout.shares, layout.jitter_km, layout.region):
        array.setflags(write=False)  # cached and shared: nobody may change the map
    return layout


@functools.cache
def _realistic_layout() -> CityLayout:
    rng = np.random.default_rng(catalogues.PLACES_SEED)
    metros = catalogues.METROS
    n_metros, n_towns = len(metros), catalogues.N_PLACES - len(metros)
    metro_lat = np.asarray([m[1] for m in metros])
    metro_lon = np.asarray([m[2] for m in metros])
    town_region = rng.integers(0, n_metros, n_towns).astype(np.int64)
    distance = rng.uniform(*catalogues.TOWN_DISTANCE_KM, n_towns)
    bearing = rng.uniform(0.0, 2 * np.pi, n_towns)
    centre_lat = metro_lat[town_region]
    town_lat = centre_lat + distance * np.cos(bearing) / 111.32
    town_lon = metro_lon[town_region] + distance * np.sin(bearing) / (
        111.32 * np.cos(np.radians(centre_lat))
    )
    stems = [p + s for p in catalogues.TOWN_PREFIXES for s in catalogues.TOWN_SUFFIXES]
    stem_order = [rng.permutation(len(stems)) for _ in range(n_metros)]
    seen = np.zeros(n_metros, dtype=np.int64)
    town_names = []
    for region in town_region:
        stem = stems[stem_order[region][seen[region] % len(stems)]]
        town_names.append(f"{stem} ({metros[region][0]})")
        seen[region] += 1
    ranks = np.arange(1, catalogues.N_PLACES + 1, dtype=np.float64)
    place_p = ranks**-catalogues.PLACE_ZIPF_EXPONENT
    shares = place_p / place_p.sum()
    # Bigger places spread wider: the radius follows the fourth root of the size.
    jitter = np.clip(
        catalogues.CITY_JITTER_KM * (shares / shares[0]) ** 0.25,
        catalogues.MIN_PLACE_JITTER_KM,
        catalogues.CITY_JITTER_KM,
    )
    return CityLayout(
        name="realistic",
        names=tuple(m[0] for m in metros) + tuple(town_names),
        lat=np.concatenate([metro_lat, town_lat]),
        lon=np.concatenate([metro_lon, town_lon]),
        shares=shares,
        jitter_km=jitter,
        region=np.concatenate([np.arange(n_metros, dtype=np.int64), town_region]),
    )


@dataclasses.dataclass(frozen=True)
class Latent:
    """The hidden truth behind a generated population (row ``i`` = user id ``i + 1``).

    user_types : (n,) int64 — personality type
    type_profiles : (N_TYPES, n_questions) float64 — mean answer per type
    type_subject_prefs : (N_TYPES, n_subjects) float64 — rows sum to 1
    affinity : (N_TYPES, N_TYPES) float64 — in [-1, 1], 1 on the diagonal
    quality : (n, 6) float64 — latent quality per rating dimension, z-scale
    rater_bias : (n,) float64 — added to every rating the user gives, in rating points
    taste : (n, 6) float64 — weight of each dimension in the user's likes; rows sum to 1
    generosity : (n,) float64 — added to the user's like logit
    home_city : (n,) int64 — index into the layout's places (also for users without a location)
    """

    user_types: IntArray
    type_profiles: FloatArray
    type_subject_prefs: FloatArray
    affinity: FloatArray
    quality: FloatArray
    rater_bias: FloatArray
    taste: FloatArray
    generosity: FloatArray
    home_city: IntArray


def like_probability(
    affinity: FloatArray,
    appeal: FloatArray,
    generosity: FloatArray,
    distance_km: FloatArray,
) -> FloatArray:
    """P(user u likes target t) when u is shown t.

    ``logit = LIKE_BASE + LIKE_AFFINITY·affinity + LIKE_APPEAL·appeal + generosity
    − LIKE_DISTANCE_PER_10KM·distance_km/10`` and ``P(like) = 1 / (1 + exp(−logit))``, where

    - ``affinity = Latent.affinity[type_u, type_t]`` in [-1, 1] (what quiz similarity and
      interest overlap measure),
    - ``appeal = Σ_d taste[u, d] · quality[t, d]`` (what rating quality and rating fit measure),
    - ``generosity`` is u's own propensity to like,
    - ``distance_km`` is the pair's distance, NaN (a missing location) counting as 0.

    Of the showings not liked, a share ``BLOCK_RATE · (1 − P(like))²`` ends in a block, the
    rest in a pass. All arguments are (m,) float64; returns (m,) float64.
    """
    distance = np.nan_to_num(distance_km, nan=0.0)
    logit = (
        LIKE_BASE
        + LIKE_AFFINITY * affinity
        + LIKE_APPEAL * appeal
        + generosity
        - LIKE_DISTANCE_PER_10KM * distance / 10.0
    )
    return 1.0 / (1.0 + np.exp(-logit))


def block_probability(p_like: FloatArray) -> FloatArray:
    """P(block) for a showing whose like probability is ``p_like`` (see like_probability)."""
    return BLOCK_RATE * (1.0 - p_like) ** 2


# ------------------------------------------------------------------------------ generation


def generate(
    n_users: int,
    seed: int,
    now: dt.datetime,
    cities: str = DEFAULT_CITIES,
    *,
    chunk_users: int = CHUNK_USERS,
) -> dict[str, pd.DataFrame]:
    """Source-table frames for a population of ``n_users`` (ids 1..n), keyed by table name.

    ``cities`` names the layout of where users live (:data:`CITY_LAYOUTS`). The chunks of
    :func:`generate_chunks`, concatenated: for tests and small populations (a million users'
    frames take several GB; :func:`seed` writes chunk by chunk instead).
    """
    frames, _ = generate_with_latent(n_users, seed, now, cities, chunk_users=chunk_users)
    return frames


def generate_with_latent(
    n_users: int,
    seed: int,
    now: dt.datetime,
    cities: str = DEFAULT_CITIES,
    *,
    chunk_users: int = CHUNK_USERS,
) -> tuple[dict[str, pd.DataFrame], Latent]:
    """Like :func:`generate`, and also the latent truth the rows were drawn from."""
    started = time.perf_counter()
    generation = _Generation(n_users, seed, now, cities, chunk_users)
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in source.WRITE_ORDER}
    for chunk in generation.chunks():
        for name, frame in chunk.frames.items():
            parts[name].append(frame)
    given = {name: _concat(frames) for name, frames in parts.items() if name != "rating_dimensions"}
    frames = source.source_frames(**given)
    logger.debug(
        "generated %d users in %.2fs",
        n_users,
        time.perf_counter() - started,
        extra={"action": "seed.generate", "rows": {k: len(v) for k, v in frames.items()}},
    )
    return frames, generation.latent


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    # Empty parts are left out: pandas warns about (and will change) the dtypes it infers
    # when concatenating them.
    full = [frame for frame in frames if len(frame)] or frames[:1]
    if len(full) == 1:
        return full[0]
    return pd.concat(full, ignore_index=True)


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Rows of some source tables, in the order :func:`seed` writes them.

    ``step`` is what the chunk holds (``catalogues``, ``users and quiz``, ``interests``,
    ``likes and ratings``), ``users`` how many users' rows it holds (for likes and ratings:
    the users of the whole regions it covers).
    """

    step: str
    index: int
    users: int
    frames: dict[str, pd.DataFrame]


def generate_chunks(
    n_users: int,
    seed: int,
    now: dt.datetime,
    cities: str = DEFAULT_CITIES,
    *,
    chunk_users: int = CHUNK_USERS,
) -> Iterator[Chunk]:
    """The rows of :func:`generate`, a chunk of about ``chunk_users`` users at a time.

    Only the per-user arrays of the whole population stay in memory (about 200 bytes a user);
    each chunk's rows are drawn when it is asked for. One generator draws everything in
    order, so the rows depend on ``chunk_users`` as much as on the seed: keep the default for
    reproducible populations. A population of at most ``chunk_users`` is one chunk per step,
    drawn exactly as before chunking.
    """
    return _Generation(n_users, seed, now, cities, chunk_users).chunks()


class _Generation:
    """One population's draw: the per-user arrays at once, then the rows chunk by chunk."""

    def __init__(
        self, n_users: int, seed: int, now: dt.datetime, cities: str, chunk_users: int
    ) -> None:
        if n_users < 1:
            raise ValueError(f"n_users must be >= 1; got {n_users}")
        if chunk_users < 1:
            raise ValueError(f"chunk_users must be >= 1; got {chunk_users}")
        if now.tzinfo is None:
            raise ValueError(f"now must be timezone-aware (UTC); got naive {now!r}")
        self.n_users, self.chunk_users = n_users, chunk_users
        self.now_s = int(now.timestamp())
        self.rng = np.random.default_rng(seed)
        layout = city_layout(cities, n_users)
        self.types = _types(self.rng)
        self.people = _users(self.rng, n_users, self.now_s, layout)
        self.user_types = self.rng.choice(N_TYPES, size=n_users, p=self.types.shares).astype(
            np.int64
        )
        self._latent: Latent | None = None
        self.groups = _region_groups(self.people, chunk_users)

    @property
    def n_chunks(self) -> int:
        return 1 + 2 * -(-self.n_users // self.chunk_users) + len(self.groups)

    @property
    def latent(self) -> Latent:
        if self._latent is None:
            raise RuntimeError("the latent qualities are drawn after the interests' chunks")
        return self._latent

    def chunks(self) -> Iterator[Chunk]:
        rng, people, n = self.rng, self.people, self.n_users
        # The draws keep the order of the unchunked generation: every quiz chunk, then every
        # interest chunk, the latent qualities, then likes and ratings.
        subjects, interests = _interest_catalogue()
        yield Chunk(
            "catalogues",
            0,
            0,
            {
                "quiz_questions": _quiz_questions(),
                "subjects": subjects,
                "interests": interests,
                "rating_dimensions": source.rating_dimensions_frame(),
            },
        )
        slices = [slice(a, min(a + self.chunk_users, n)) for a in range(0, n, self.chunk_users)]
        for i, rows in enumerate(slices):
            answers = _quiz_answers(
                rng, self.user_types, self.types.profiles, people, rows, self.now_s
            )
            frames = {"users": _users_frame(people, rows), "quiz_answers": answers}
            yield Chunk("users and quiz", i, rows.stop - rows.start, frames)
        log_p = _interest_log_p(self.types.subject_prefs)
        for i, rows in enumerate(slices):
            frame = _user_interests(rng, self.user_types, log_p, people, rows)
            yield Chunk("interests", i, rows.stop - rows.start, {"user_interests": frame})

        quality = 0.6 * rng.standard_normal((n, 1)) + 0.8 * rng.standard_normal((n, 6))
        rater_bias = rng.normal(0.0, 0.9, n)
        taste = rng.dirichlet([3.0, 1.5, 1.5, 2.0, 1.0, 1.5], size=n)
        generosity = 0.4 * rater_bias / 0.9 + rng.normal(0.0, 0.4, n)
        latent = Latent(
            user_types=self.user_types,
            type_profiles=self.types.profiles,
            type_subject_prefs=self.types.subject_prefs,
            affinity=self.types.affinity,
            quality=quality,
            rater_bias=rater_bias,
            taste=taste,
            generosity=generosity,
            home_city=people.home_city,
        )
        self._latent = latent
        for i, members in enumerate(self.groups):
            likes, met = _likes(rng, people, latent, members, self.now_s)
            ratings = _ratings(rng, met, latent, people)
            yield Chunk("likes and ratings", i, len(members), {"likes": likes, "ratings": ratings})


def _region_groups(people: _People, chunk_users: int) -> list[IntArray]:
    """The users' rows, ascending, grouped by whole regions of up to ``chunk_users`` users in
    all (a bigger region is a group of its own): people meet only inside their region."""
    sizes = np.bincount(people.region, minlength=people.n_regions)
    group_of_region = np.zeros(people.n_regions, dtype=np.int64)
    group, in_group = 0, 0
    for region, size in enumerate(sizes.tolist()):
        if in_group and in_group + size > chunk_users:
            group, in_group = group + 1, 0
        group_of_region[region] = group
        in_group += size
    group_of_user = group_of_region[people.region]
    by_group = np.argsort(group_of_user, kind="stable")
    bounds = np.searchsorted(group_of_user[by_group], np.arange(group + 2))
    return [by_group[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@dataclasses.dataclass(frozen=True)
class _Types:
    shares: FloatArray
    profiles: FloatArray
    subject_prefs: FloatArray
    affinity: FloatArray


def _types(rng: np.random.Generator) -> _Types:
    shares = rng.dirichlet(np.full(N_TYPES, 6.0))
    profiles = np.clip(
        3.0 + 1.3 * rng.standard_normal((N_TYPES, len(catalogues.QUIZ_QUESTIONS))),
        1.0,
        5.0,
    )
    subject_prefs = rng.dirichlet(np.full(len(catalogues.SUBJECTS), 0.6), size=N_TYPES)
    centred = profiles - profiles.mean(axis=1, keepdims=True)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    quiz_corr = centred @ centred.T
    unit_prefs = subject_prefs / np.linalg.norm(subject_prefs, axis=1, keepdims=True)
    subject_cos = unit_prefs @ unit_prefs.T  # in [0, 1]
    affinity = np.clip(0.5 * quiz_corr + 0.5 * (2.0 * subject_cos - 1.0), -1.0, 1.0)
    np.fill_diagonal(affinity, 1.0)
    return _Types(shares, profiles, subject_prefs, affinity)


@dataclasses.dataclass(frozen=True)
class _People:
    """Per-user arrays the later stages need (row i = user id i + 1)."""

    gender: IntArray
    seeking: IntArray
    age: IntArray
    age_min: IntArray
    age_max: IntArray
    max_distance: FloatArray  # NaN = no limit set
    lat: FloatArray  # NaN = no location
    lon: FloatArray
    home_city: IntArray
    region: IntArray  # who may be shown to whom: people of one region meet
    n_regions: int
    created_s: IntArray
    last_active_s: IntArray
    # only for the users table's rows
    birth_day: IntArray  # days since the epoch
    city_names: npt.NDArray[np.object_]  # None = no location
    active: npt.NDArray[np.bool_]
    display_names: npt.NDArray[np.object_]


def _timestamps(seconds: IntArray) -> pd.Series:
    return pd.Series(seconds.astype("datetime64[s]")).dt.tz_localize("UTC")


def _users(rng: np.random.Generator, n: int, now_s: int, layout: CityLayout) -> _People:
    gender = rng.choice(3, size=n, p=GENDER_SHARES).astype(np.int64)
    seeking = np.zeros(n, dtype=np.int64)
    for g, (masks, shares) in ORIENTATIONS.items():
        rows = np.flatnonzero(gender == g)
        seeking[rows] = rng.choice(np.asarray(masks), size=len(rows), p=shares)

    # Ages 18-70, most between 22 and 40 (18 + lognormal, median 30).
    age_float = np.minimum(18.0 + np.exp(rng.normal(np.log(12.0), 0.5, n)), 70.99)
    now_day = now_s // SECONDS_PER_DAY
    birth_day = now_day - np.round(age_float * 365.25).astype(np.int64)
    age = ((now_day - birth_day) / 365.25).astype(np.int64)
    # Men skew their range a little younger, everyone stays within 18-99.
    below = np.round(rng.uniform(2, 9, n) + 1.5 * (gender == 1)).astype(np.int64)
    above = np.round(rng.uniform(3, 12, n) - 1.5 * (gender == 1)).astype(np.int64)
    age_min = np.clip(age - below, 18, 99)
    age_max = np.clip(age + np.maximum(above, 1), 18, 99)

    max_distance = rng.choice(np.asarray(MAX_DISTANCE_CHOICES), size=n, p=MAX_DISTANCE_SHARES)
    max_distance[rng.random(n) < NULL_MAX_DISTANCE_SHARE] = np.nan

    home_city = rng.choice(layout.n_places, size=n, p=layout.shares).astype(np.int64)
    centres = np.stack([layout.lat, layout.lon], axis=1)
    jitter = layout.jitter_km[home_city]
    radius = np.minimum(np.abs(rng.normal(0.0, jitter / 2.5, n)), jitter)
    bearing = rng.uniform(0.0, 2 * np.pi, n)
    lat = centres[home_city, 0] + radius * np.cos(bearing) / 111.32
    lon = centres[home_city, 1] + radius * np.sin(bearing) / (
        111.32 * np.cos(np.radians(centres[home_city, 0]))
    )
    no_location = rng.random(n) < NO_LOCATION_SHARE
    lat[no_location] = np.nan
    lon[no_location] = np.nan
    city_names = np.asarray(layout.names, dtype=object)[home_city]
    city_names[no_location] = None

    # Sign-ups grow over two years; a few joined in the last three days.
    days_ago = HISTORY_DAYS * rng.random(n) ** 1.3
    brand_new = rng.random(n) < BRAND_NEW_SHARE
    days_ago[brand_new] = rng.uniform(0.0, 3.0, brand_new.sum())
    created_s = now_s - np.round(days_ago * SECONDS_PER_DAY).astype(np.int64)
    tenure_s = now_s - created_s
    inactive = (rng.random(n) < INACTIVE_SHARE) & ~brand_new
    recent_s = np.round(rng.exponential(4.0 * SECONDS_PER_DAY, n)).astype(np.int64)
    last_active_s = np.where(
        inactive,
        created_s + np.round(tenure_s * rng.uniform(0.0, 0.6, n)).astype(np.int64),
        np.maximum(now_s - recent_s, created_s),
    )

    names = np.empty(n, dtype=object)
    for g, pool in catalogues.FIRST_NAMES.items():
        rows = np.flatnonzero(gender == g)
        names[rows] = np.asarray(pool, dtype=object)[rng.integers(0, len(pool), len(rows))]
    initials = np.asarray(list("ABCDEFGHIJKLMNOPRSTVWZ"), dtype=object)
    display = names + " " + initials[rng.integers(0, len(initials), n)] + "."

    return _People(
        gender=gender,
        seeking=seeking,
        age=age,
        age_min=age_min,
        age_max=age_max,
        max_distance=max_distance,
        lat=lat,
        lon=lon,
        home_city=home_city,
        region=layout.region[home_city],
        n_regions=int(layout.region.max()) + 1,
        created_s=created_s,
        last_active_s=last_active_s,
        birth_day=birth_day,
        city_names=city_names,
        active=~inactive,
        display_names=display,
    )


def _users_frame(people: _People, rows: slice) -> pd.DataFrame:
    """The ``users`` rows of ``people[rows]`` (row i = user id i + 1)."""
    return pd.DataFrame(
        {
            "id": np.arange(rows.start + 1, rows.stop + 1, dtype=np.int64),
            "birth_date": pd.Series(
                people.birth_day[rows].astype("datetime64[D]").astype("datetime64[s]")
            ),
            "gender": people.gender[rows],
            "seeking_mask": people.seeking[rows],
            "age_min": people.age_min[rows],
            "age_max": people.age_max[rows],
            "max_distance_km": people.max_distance[rows],
            "latitude": people.lat[rows],
            "longitude": people.lon[rows],
            "city": pd.Series(people.city_names[rows], dtype=object),
            "created_at": _timestamps(people.created_s[rows]),
            "last_active_at": _timestamps(people.last_active_s[rows]),
            "is_active": people.active[rows],
            "display_name": pd.Series(people.display_names[rows], dtype=object),
        }
    )


def _between(rng: np.random.Generator, start_s: IntArray, end_s: IntArray) -> IntArray:
    """A uniform whole second in [start, end] per row (end < start collapses to start)."""
    span = np.maximum(end_s - start_s, 0)
    return start_s + np.floor(rng.random(len(start_s)) * (span + 1)).astype(np.int64)


def _quiz_questions() -> pd.DataFrame:
    n_q = len(catalogues.QUIZ_QUESTIONS)
    return pd.DataFrame(
        {
            "id": np.arange(1, n_q + 1, dtype=np.int64),
            "text": [q[0] for q in catalogues.QUIZ_QUESTIONS],
            "scale_min": np.full(n_q, catalogues.QUIZ_SCALE[0]),
            "scale_max": np.full(n_q, catalogues.QUIZ_SCALE[1]),
            "weight": np.asarray([q[1] for q in catalogues.QUIZ_QUESTIONS]),
            "is_active": np.asarray([q[2] for q in catalogues.QUIZ_QUESTIONS]),
        }
    )


def _quiz_answers(
    rng: np.random.Generator,
    user_types: IntArray,
    profiles: FloatArray,
    people: _People,
    rows: slice,
    now_s: int,
) -> pd.DataFrame:
    """The quiz answers of the users ``rows`` (``user_types`` is the whole population's)."""
    types = user_types[rows]
    created_s, last_active_s = people.created_s[rows], people.last_active_s[rows]
    n, n_q = len(types), len(catalogues.QUIZ_QUESTIONS)
    # Most users answer ~90% of the questions; ~3% give up after a handful; retired
    # (inactive) questions were only answered by some.
    p_answer = rng.beta(12.0, 1.5, n)
    p_answer[rng.random(n) < TOO_FEW_ANSWERS_SHARE] = 0.08
    question_factor = np.where([q[2] for q in catalogues.QUIZ_QUESTIONS], 1.0, 0.4)
    answered = rng.random((n, n_q)) < p_answer[:, None] * question_factor[None, :]
    style = rng.normal(0.0, 0.3, n)  # a user's tendency to agree or disagree overall
    noise = rng.normal(0.0, 0.85, (n, n_q))
    values = np.clip(np.round(profiles[types] + style[:, None] + noise), 1.0, 5.0)
    users, cols = np.nonzero(answered)
    quiz_s = np.minimum(
        created_s + np.round(rng.exponential(6 * 3600.0, n)).astype(np.int64), last_active_s
    )
    return pd.DataFrame(
        {
            "user_id": users.astype(np.int64) + rows.start + 1,
            "question_id": cols.astype(np.int64) + 1,
            "value": values[users, cols],
            "answered_at": _timestamps(
                np.minimum(quiz_s[users] + 10 * cols, np.minimum(last_active_s[users], now_s))
            ),
        }
    )


def _interest_catalogue() -> tuple[pd.DataFrame, pd.DataFrame]:
    n_subjects = len(catalogues.SUBJECTS)
    per_subject = len(catalogues.SUBJECTS[0][1])
    subjects = pd.DataFrame(
        {
            "id": np.arange(1, n_subjects + 1, dtype=np.int64),
            "name": [s[0] for s in catalogues.SUBJECTS],
        }
    )
    interests = pd.DataFrame(
        {
            "id": np.arange(1, n_subjects * per_subject + 1, dtype=np.int64),
            "subject_id": np.repeat(subjects["id"].to_numpy(), per_subject),
            "name": [name for _, names in catalogues.SUBJECTS for name in names],
        }
    )
    return subjects, interests


def _interest_log_p(subject_prefs: FloatArray) -> npt.NDArray[np.float32]:
    """log P(interest | type), (N_TYPES, n_interests)."""
    per_subject = len(catalogues.SUBJECTS[0][1])
    # P(interest | type) = 0.8 · P(subject | type) · Zipf within subject + 0.2 · overall
    zipf = np.arange(1, per_subject + 1, dtype=np.float64) ** -catalogues.INTEREST_ZIPF_EXPONENT
    zipf /= zipf.sum()
    by_type = (subject_prefs[:, :, None] * zipf[None, None, :]).reshape(N_TYPES, -1)
    overall = by_type.mean(axis=0)
    return np.log(0.8 * by_type + 0.2 * overall[None, :]).astype(np.float32)


def _user_interests(
    rng: np.random.Generator,
    user_types: IntArray,
    log_p: npt.NDArray[np.float32],
    people: _People,
    rows: slice,
) -> pd.DataFrame:
    """The interests of the users ``rows`` (``user_types`` is the whole population's)."""
    types = user_types[rows]
    created_s, last_active_s = people.created_s[rows], people.last_active_s[rows]
    n = len(types)
    counts = 3 + rng.binomial(12, 0.4, n)  # 3..15 interests each
    # Gumbel top-k: sampling k distinct interests per user without a Python loop.
    keys = log_p[types] + rng.gumbel(size=(n, log_p.shape[1])).astype(np.float32)
    order = np.argsort(-keys, axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(log_p.shape[1])[None, :], axis=1)
    chosen = ranks < counts[:, None]
    users, cols = np.nonzero(chosen)
    # Favourites (picked first) tend to get higher weights.
    weights = np.clip(
        np.round(8.5 - 0.45 * ranks[users, cols] + rng.normal(0, 1.6, len(users))), 1, 10
    )
    weights[rng.random(len(users)) < NULL_INTEREST_WEIGHT_SHARE] = np.nan
    created = np.minimum(
        created_s[users] + rng.integers(0, 3 * SECONDS_PER_DAY, len(users)),
        last_active_s[users],
    )
    return pd.DataFrame(
        {
            "user_id": users.astype(np.int64) + rows.start + 1,
            "interest_id": cols.astype(np.int64) + 1,
            "weight": weights,
            "created_at": _timestamps(created),
        }
    )


def _passes_filters(
    people: _People, u: IntArray, t: IntArray, distance: FloatArray
) -> npt.NDArray[np.bool_]:
    """Whether u→t passes the match job's hard filters in both directions (no location = pass)."""
    gender_ok = ((people.seeking[u] >> people.gender[t]) & 1).astype(bool) & (
        (people.seeking[t] >> people.gender[u]) & 1
    ).astype(bool)
    age_ok = (
        (people.age[t] >= people.age_min[u])
        & (people.age[t] <= people.age_max[u])
        & (people.age[u] >= people.age_min[t])
        & (people.age[u] <= people.age_max[t])
    )
    limit = np.minimum(
        np.nan_to_num(people.max_distance[u], nan=DEFAULT_MAX_DISTANCE_KM),
        np.nan_to_num(people.max_distance[t], nan=DEFAULT_MAX_DISTANCE_KM),
    )
    distance_ok = np.isnan(distance) | (distance <= limit)
    return gender_ok & age_ok & distance_ok


def _showings(
    rng: np.random.Generator, people: _People, members: IntArray
) -> tuple[IntArray, IntArray]:
    """Who was shown whom among ``members`` (the rows of whole regions, ascending): (user rows,
    target rows), unique pairs sorted by (user, target)."""
    n = len(people.gender)
    tenure_days = (people.last_active_s[members] - people.created_s[members]) / SECONDS_PER_DAY
    activity = np.exp(rng.normal(-0.18, 0.6, len(members))) * np.clip(tenure_days / 14.0, 0.1, 1.0)
    per_user = rng.poisson(ENCOUNTERS_PER_USER * activity)
    u = np.repeat(members, per_user)

    # The gender of each shown person: one the user seeks, in proportion to how many there are.
    gender_share = np.bincount(people.gender, minlength=3) / n
    bits = (people.seeking[u][:, None] >> np.arange(3)[None, :]) & 1
    weights = np.cumsum(bits * gender_share[None, :], axis=1)
    total = weights[:, -1]
    pick = rng.random(len(u)) * total
    target_gender = (pick[:, None] >= weights).sum(axis=1)
    keep = total > 0
    u, target_gender = u[keep], np.minimum(target_gender[keep], 2)

    # Someone of that gender in the same region, uniformly.
    block_key = people.region[members] * 3 + people.gender[members]
    order = np.argsort(block_key, kind="stable")
    by_block = members[order]
    block_starts = np.searchsorted(block_key[order], np.arange(people.n_regions * 3 + 1))
    want = people.region[u] * 3 + target_gender
    start, size = block_starts[want], block_starts[want + 1] - block_starts[want]
    keep = size > 0
    u, start, size = u[keep], start[keep], size[keep]
    t = by_block[start + np.floor(rng.random(len(u)) * size).astype(np.int64)]

    # Reciprocal showings: the other person saw this user too (so mutual likes can happen).
    back = rng.random(len(u)) < RECIPROCAL_SHARE
    u, t = np.concatenate([u, t[back]]), np.concatenate([t, u[back]])
    keep = u != t
    pair_keys = np.unique(u[keep] * n + t[keep])
    return pair_keys // n, pair_keys % n


def _likes(
    rng: np.random.Generator, people: _People, latent: Latent, members: IntArray, now_s: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The likes, passes and blocks among ``members`` (whole regions: people meet only inside
    theirs, so a mutual like is decided here too), and who of them then met and rated whom."""
    n = len(people.gender)
    u, t = _showings(rng, people, members)
    distance = geo.haversine_km(people.lat[u], people.lon[u], people.lat[t], people.lon[t])
    keep = _passes_filters(people, u, t, distance) | (rng.random(len(u)) < OFF_FILTER_SHARE)
    # u can only act on t while u is active and after t signed up.
    start_s = np.maximum(people.created_s[u], people.created_s[t])
    keep &= start_s <= people.last_active_s[u]
    u, t, distance, start_s = u[keep], t[keep], distance[keep], start_s[keep]

    affinity = latent.affinity[latent.user_types[u], latent.user_types[t]]
    appeal = np.einsum("ij,ij->i", latent.taste[u], latent.quality[t])
    p_like = like_probability(affinity, appeal, latent.generosity[u], distance)
    draw = rng.random(len(u))
    like = draw < p_like
    block = draw >= 1.0 - block_probability(p_like)
    kind = np.where(like, "like", np.where(block, "block", "pass")).astype(object)
    acted_s = _between(rng, start_s, np.minimum(people.last_active_s[u], now_s))
    likes = pd.DataFrame(
        {
            "user_id": u + 1,
            "target_id": t + 1,
            "kind": kind,
            "created_at": _timestamps(acted_s),
        }
    )

    # Who met and rated whom: most mutual likes, some one-sided likes, a few passes.
    keys = u * n + t
    liked_keys = keys[like]
    mutual = like & np.isin(t * n + u, liked_keys)
    p_meet = np.where(mutual, MEET_AFTER_MUTUAL, np.where(like, MEET_AFTER_LIKE, 0.0))
    p_meet = np.where(~like & ~block, MEET_AFTER_PASS, p_meet)
    met = rng.random(len(u)) < p_meet
    met_frame = pd.DataFrame(
        {
            "rater": u[met],
            "rated": t[met],
            "rated_at": np.minimum(
                acted_s[met] + rng.integers(3600, 3 * SECONDS_PER_DAY, met.sum()),
                np.minimum(people.last_active_s[u[met]], now_s),
            ),
        }
    )
    return likes, met_frame


def _ratings(
    rng: np.random.Generator, met: pd.DataFrame, latent: Latent, people: _People
) -> pd.DataFrame:
    rater = met["rater"].to_numpy()
    rated = met["rated"].to_numpy()
    m, n_dims = len(rater), len(source.RATING_DIMENSIONS)
    # Dimensions 1-5 rate the person; "shared_interests" (6) rates the pair.
    affinity = latent.affinity[latent.user_types[rater], latent.user_types[rated]]
    centre = np.empty((m, n_dims))
    centre[:, :5] = 5.8 + 1.5 * latent.quality[rated, :5]
    centre[:, 5] = 5.0 + 2.5 * affinity + 0.5 * latent.quality[rated, 5]
    values = np.clip(
        np.round(centre + latent.rater_bias[rater, None] + rng.normal(0.0, 1.1, (m, n_dims))),
        1.0,
        10.0,
    )
    present = rng.random((m, n_dims)) >= np.asarray(RATING_MISSING)[None, :]
    rows, dims = np.nonzero(present)
    return pd.DataFrame(
        {
            "rater_id": rater[rows] + 1,
            "rated_id": rated[rows] + 1,
            "dimension_id": dims.astype(np.int64) + 1,
            "value": values[rows, dims],
            "created_at": _timestamps(met["rated_at"].to_numpy()[rows]),
        }
    )


# ------------------------------------------------------------------------------ writing


def write(conn: sa.Connection, frames: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Append generated frames to the source tables in ``conn``'s transaction; rows per table."""
    return source.write_frames(conn, frames)


@dataclasses.dataclass(frozen=True)
class SeedResult:
    n_users: int
    seed: int
    now: dt.datetime
    cities: str
    rows: dict[str, int]
    deleted: dict[str, int]
    generate_seconds: float
    write_seconds: float  # the COPYs and the commit
    chunks: int
    table_write_seconds: dict[str, float]  # summed over the chunks


def seed(
    engine: sa.Engine,
    *,
    n_users: int,
    seed: int,
    now: dt.datetime = DEFAULT_NOW,
    replace: bool = False,
    cities: str = DEFAULT_CITIES,
    show_progress: bool = False,
    chunk_users: int = CHUNK_USERS,
) -> SeedResult:
    """Ensure the schema, then write a generated population in one transaction.

    The rows are generated and written chunk by chunk (``chunk_users`` users at a time; the
    rows depend on it, see :func:`generate_chunks`), so memory stays bounded whatever
    ``n_users``; the one transaction keeps the seed all or nothing (a failure leaves the
    database as it was). Refuses a database that already has
    users unless ``replace`` (which first deletes every source row, in the same transaction;
    derived tables are left to their jobs' next run).
    """
    migrate.upgrade(engine)
    started = time.perf_counter()
    generation = _Generation(n_users, seed, now, cities, chunk_users)
    generate_s = time.perf_counter() - started
    rows: dict[str, int] = {name: 0 for name in source.WRITE_ORDER}
    table_s: dict[str, float] = {name: 0.0 for name in source.WRITE_ORDER}
    bar = progress.bar(
        total=generation.n_chunks,
        desc=f"seed {n_users:,} users",
        enabled=show_progress,
        unit="chunk",
    )
    try:
        with engine.begin() as conn:
            deleted = source.clear_for_load(conn, replace=replace, what="seed")
            chunks = generation.chunks()
            while True:
                drawn = time.perf_counter()
                chunk = next(chunks, None)
                generate_s += time.perf_counter() - drawn
                if chunk is None:
                    break
                for name, frame in chunk.frames.items():
                    written = time.perf_counter()
                    rows[name] += source.write_frames(conn, {name: frame})[name]
                    table_s[name] += time.perf_counter() - written
                logger.debug(
                    "seed chunk %s %d: %d users",
                    chunk.step,
                    chunk.index,
                    chunk.users,
                    extra={"action": "seed.chunk", "step": chunk.step, "index": chunk.index},
                )
                bar.set_postfix_str(chunk.step)
                bar.update(1)
    finally:
        bar.close()
    finished = time.perf_counter()
    result = SeedResult(
        n_users=n_users,
        seed=seed,
        now=now,
        cities=cities,
        rows=rows,
        deleted=deleted,
        generate_seconds=generate_s,
        write_seconds=finished - started - generate_s,
        chunks=generation.n_chunks,
        table_write_seconds=table_s,
    )
    logger.info(
        "seeded %d users (seed %d, %s cities): %d rows in %.1fs",
        n_users,
        seed,
        cities,
        sum(rows.values()),
        finished - started,
        extra={"action": "seed.write", "rows": rows, "seed": seed, "cities": cities},
    )
    return result
