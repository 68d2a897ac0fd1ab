"""Candidate generation: exact blocked ranking by the final score, FAISS beyond a block size.

Partitions
    Eligible candidates (active users) are split by filter cohort
    (:func:`compute.filters.cohort_keys`: gender × seeking mask, ≤ 24 cohorts) and,
    when ``CandidateParams.age_band_years`` is set, by age band, and when
    ``CandidateParams.geo_cell_deg`` is set, by coarse lat/lon grid cell (users
    without location form cell -1). A query user searches only partitions whose
    cohort is gender-compatible both ways and, when the distance filter is on and the
    user has a location, whose cell may lie within ``min(user limit, largest member
    limit)`` (a rigorous lower bound, :func:`compute.geo.min_distance_to_cell_km`),
    and, when the age filter is on, whose age band meets the user's range and whose
    members' ranges may include the user's age. Partition -1 cells and location-less
    users search / are searched everywhere.

Exact blocked ranking (the default path)
    The query rows are grouped by (filter cohort, own age band, geo cell). A group's
    *block* is every member of the partitions any of its rows searches. For rows that
    reach fewer than ``exact_below`` candidates, :func:`compute.blockscore.rank_block`
    computes the exact final score of every (query, candidate) pair of the block as
    dense matrices, masks every hard filter both ways and keeps the best
    ``top_k + margin`` per row (score desc, candidate user id asc).
    ``compute.scoring.score_pairs`` then scores those pairs exactly and keeps the top K:
    that top K is the exhaustive top K over every filter-passing candidate. With the
    seeded 100k population (20 cities, 1° cells) every block is exact (≈ 4–15k
    candidates).

FAISS neighbour lists (rows reaching ``exact_below`` candidates or more)
    ``quiz`` and ``interest``: one FAISS index per partition over the L2-normalized
    vectors of members that have one (inner product = cosine). ``IndexFlatIP`` when
    the partition has fewer than ``exact_below`` vectors, else ``IndexIVFFlat`` with
    ``nlist = round(nlist_factor · √N)`` trained on an ``rng``-chosen sample with an
    ``rng``-derived k-means seed, searched with ``nprobe``.
    ``fallback``: for users with neither vector, candidates are ranked by rating
    quality (missing → ``fallback_neutral_quality``), then by newest account, then by
    user id, within the same compatible partitions.
    Per source and user: ask each searched partition for ``f = next_pow2(k + margin +
    n_excluded)`` neighbours, drop ``-1`` ids, apply :func:`compute.filters.mutual_filter`;
    if fewer than ``k + margin`` survive and some partition still has unseen members,
    repeat with ``f · growth``. The union of the sources' lists is then ranked by the
    same exact block scorer (restricted to those pairs) and trimmed to ``top_k + margin``.
    This path only approximates the exhaustive top K (it misses candidates that are far
    by quiz and interest but win on the other signals); it exists for populations where
    one city's compatible users outgrow dense scoring (≳ 20k per block).

Everything about a user depends only on that user and the candidates its filters reach,
so a user's candidates computed alone equal that user's candidates inside any batch.
Each pair records which source found it (``block`` for the exact path).
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass, field, fields
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from compute import blockscore, blockterms, filters, geo, scoring, signals
from compute.population import Population

SOURCES: tuple[str, ...] = ("quiz", "interest", "fallback", "block")
# Sources with a per-partition member list in CandidateIndexes.
INDEXED_SOURCES: tuple[str, ...] = ("quiz", "interest", "fallback")
VECTOR_SOURCES: tuple[str, ...] = ("quiz", "interest")
SOURCE_BITS: dict[str, int] = {name: 1 << i for i, name in enumerate(SOURCES)}
_NO_CELL = -1
_CELL_SPAN = 1 << 40
_BAND_SPAN = 256
# Query-group age band when the partitions have none.
_GROUP_BAND_YEARS = 5

RowArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class CandidateParams:
    """Candidate generation settings (filled from YAML).

    Attributes
    ----------
    k_quiz, k_interest : int ≥ 0
        Neighbours kept per user from each vector source (0 disables the source).
    k_fallback : int ≥ 0
        Candidates for users with neither vector.
    exact_below : int ≥ 1
        Rows whose search partitions hold fewer candidates are ranked exactly (dense
        scoring of every pair); the others use FAISS neighbour lists. Partitions with fewer
        vectors use exact ``IndexFlatIP``.
    nlist_factor : float > 0
        IVF lists = round(nlist_factor · √N), at least 1.
    nprobe : int ≥ 1
        IVF lists probed per query.
    train_points_per_list : int ≥ 1
        IVF training sample size = min(N, train_points_per_list · nlist).
    margin : int ≥ 0
        Pairs kept per user beyond ``top_k`` (block scores are float32; the margin keeps
        ``score_pairs``' exact top K inside the pool), and extra FAISS survivors required
        before a search stops.
    growth : int ≥ 2
        Fetch multiplier when too few candidates survive the filters.
    age_band_years : int or None
        Width of age-band partitions; None = no age partitions.
    geo_cell_deg : float or None
        Grid cell size for geographic partitioning; None = no geographic partitions.
    fallback_neutral_quality : float
        Rating quality assumed for fallback ranking when missing.
    """

    k_quiz: int = 200
    k_interest: int = 200
    k_fallback: int = 200
    exact_below: int = 100_000
    nlist_factor: float = 4.0
    nprobe: int = 64
    train_points_per_list: int = 64
    margin: int = 16
    growth: int = 4
    age_band_years: int | None = 5
    geo_cell_deg: float | None = None
    fallback_neutral_quality: float = 0.5

    def __post_init__(self) -> None:
        checks = {
            "k_quiz": self.k_quiz >= 0,
            "k_interest": self.k_interest >= 0,
            "k_fallback": self.k_fallback >= 0,
            "exact_below": self.exact_below >= 1,
            "nprobe": self.nprobe >= 1,
            "train_points_per_list": self.train_points_per_list >= 1,
            "margin": self.margin >= 0,
            "growth": self.growth >= 2,
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if not isinstance(value, int) or not ok:
                raise ValueError(f"{name} must be an int in its documented range; got {value!r}")
        if not self.nlist_factor > 0:
            raise ValueError(f"nlist_factor must be > 0; got {self.nlist_factor!r}")
        if self.age_band_years is not None and not (
            isinstance(self.age_band_years, int) and 1 <= self.age_band_years <= 120
        ):
            raise ValueError(
                f"age_band_years must be None or an int in [1, 120]; got {self.age_band_years!r}"
            )
        if self.geo_cell_deg is not None and not 0 < self.geo_cell_deg <= 180:
            raise ValueError(f"geo_cell_deg must be None or in (0, 180]; got {self.geo_cell_deg!r}")

    def k_for(self, source: str) -> int:
        """The k of one source."""
        return {"quiz": self.k_quiz, "interest": self.k_interest, "fallback": self.k_fallback}[
            source
        ]


@dataclass(frozen=True, eq=False)
class SourceIndex:
    """One source's per-partition member lists and FAISS indexes.

    Attributes
    ----------
    name : str
    member_indptr : (P + 1,) int64
    member_rows : (nnz,) int64
        Population rows of each partition's members; FAISS id i of partition p is
        ``member_rows[member_indptr[p] + i]``. For ``fallback`` the members are in
        fallback-rank order.
    indexes : tuple of faiss.Index or None, length P
        None for ``fallback`` and for empty partitions.
    """

    name: str
    member_indptr: RowArray
    member_rows: RowArray
    indexes: tuple[Any, ...]


@dataclass(frozen=True, eq=False)
class CandidateIndexes:
    """Everything built once per population for candidate search.

    Serialize with :meth:`to_bytes` (so the Ray layer can ``ray.put`` it once) and
    restore with :meth:`from_bytes`.

    Attributes
    ----------
    n_users : int
    partition_cohort : (P,) int64
    partition_cell : (P,) int64, -1 = no location / no geographic partitioning
    partition_max_distance_km : (P,) float64
        Largest member distance limit (inf if any member has none).
    partition_age_band : (P,) int64
        Band b covers ages [b·w, (b+1)·w); 0 with w = 0 when not partitioned by age.
    partition_age_min, partition_age_max : (P,) int64
        Smallest ``age_min`` and largest ``age_max`` among members.
    age_band_years : int or None
    geo_cell_deg : float or None
    sources : tuple[SourceIndex, ...]
        In :data:`INDEXED_SOURCES` order (``fallback`` lists every partition's members).
    reverse_excluded_keys : (nnz_e,) int64
        :func:`compute.blockscore.transposed_exclusion_keys` of the population.
    features : blockterms.UserFeatures
        :func:`compute.blockterms.user_features` of the population.
    """

    n_users: int
    partition_cohort: RowArray
    partition_cell: RowArray
    partition_max_distance_km: npt.NDArray[np.float64]
    partition_age_band: RowArray
    partition_age_min: RowArray
    partition_age_max: RowArray
    age_band_years: int | None
    geo_cell_deg: float | None
    sources: tuple[SourceIndex, ...]
    reverse_excluded_keys: RowArray
    features: blockterms.UserFeatures

    @property
    def n_partitions(self) -> int:
        """Number of partitions P."""
        return int(self.partition_cohort.size)

    def source(self, name: str) -> SourceIndex:
        """The :class:`SourceIndex` called ``name``."""
        for src in self.sources:
            if src.name == name:
                return src
        raise ValueError(f"source must be one of {INDEXED_SOURCES}; got {name!r}")

    def to_bytes(self) -> bytes:
        """Serialize (numpy ``.npz`` of arrays; FAISS indexes via ``serialize_index``)."""
        arrays: dict[str, npt.NDArray[Any]] = {
            "n_users": np.array([self.n_users], dtype=np.int64),
            "partition_cohort": self.partition_cohort,
            "partition_cell": self.partition_cell,
            "partition_max_distance_km": self.partition_max_distance_km,
            "partition_age_band": self.partition_age_band,
            "partition_age_min": self.partition_age_min,
            "partition_age_max": self.partition_age_max,
            "age_band_years": np.array([self.age_band_years or 0], dtype=np.int64),
            "geo_cell_deg": np.array([np.nan if self.geo_cell_deg is None else self.geo_cell_deg]),
            "reverse_excluded_keys": self.reverse_excluded_keys,
        }
        for f in fields(self.features):
            arrays[f"features.{f.name}"] = getattr(self.features, f.name)
        for src in self.sources:
            arrays[f"{src.name}.member_indptr"] = src.member_indptr
            arrays[f"{src.name}.member_rows"] = src.member_rows
            for p, index in enumerate(src.indexes):
                if index is not None:
                    arrays[f"{src.name}.index.{p}"] = faiss.serialize_index(index)
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> CandidateIndexes:
        """Inverse of :meth:`to_bytes`."""
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            stored = {name: npz[name] for name in npz.files}
        n_partitions = int(stored["partition_cohort"].size)
        sources = []
        for name in INDEXED_SOURCES:
            indexes = tuple(
                faiss.deserialize_index(stored[key])
                if (key := f"{name}.index.{p}") in stored
                else None
                for p in range(n_partitions)
            )
            sources.append(
                SourceIndex(
                    name=name,
                    member_indptr=stored[f"{name}.member_indptr"],
                    member_rows=stored[f"{name}.member_rows"],
                    indexes=indexes,
                )
            )
        cell_deg = float(stored["geo_cell_deg"][0])
        return cls(
            n_users=int(stored["n_users"][0]),
            partition_cohort=stored["partition_cohort"],
            partition_cell=stored["partition_cell"],
            partition_max_distance_km=stored["partition_max_distance_km"],
            partition_age_band=stored["partition_age_band"],
            partition_age_min=stored["partition_age_min"],
            partition_age_max=stored["partition_age_max"],
            age_band_years=int(stored["age_band_years"][0]) or None,
            geo_cell_deg=None if np.isnan(cell_deg) else cell_deg,
            sources=tuple(sources),
            reverse_excluded_keys=stored["reverse_excluded_keys"],
            features=blockterms.UserFeatures(
                **{f.name: stored[f"features.{f.name}"] for f in fields(blockterms.UserFeatures)}
            ),
        )


@dataclass(frozen=True, eq=False)
class SourcePairs:
    """One source's kept neighbours: (m,) aligned arrays sorted by (user row, rank)."""

    name: str
    user_rows: RowArray
    cand_rows: RowArray
    similarity: npt.NDArray[np.float64]
    rank: npt.NDArray[np.int32]


@dataclass(frozen=True, eq=False)
class CandidatePool:
    """Union of the sources' candidates for a set of query rows.

    Attributes
    ----------
    query_rows : (q,) int64
        The rows asked for.
    user_rows, cand_rows : (m,) int64
        Distinct pairs, sorted by (user row, candidate row); all pass the filters.
    sources : (m,) uint8
        Bitmask of :data:`SOURCE_BITS` that found the pair.
    source_pairs : tuple[SourcePairs, ...]
        Each source's ranked list (for recall audits).
    source_counts : dict[str, int]
        Pairs contributed per source (before the union).
    filter_removed : dict[str, int]
        Fetched pairs removed by each filter in the final search round.
    """

    query_rows: RowArray
    user_rows: RowArray
    cand_rows: RowArray
    sources: npt.NDArray[np.uint8]
    source_pairs: tuple[SourcePairs, ...]
    source_counts: dict[str, int] = field(default_factory=dict)
    filter_removed: dict[str, int] = field(default_factory=dict)

    def source_table(self, name: str, k: int) -> RowArray:
        """(q, k) int64 candidate rows of one source per query row, by rank; -1 pad."""
        src = next((s for s in self.source_pairs if s.name == name), None)
        if src is None:
            raise ValueError(f"name must be one of {SOURCES}; got {name!r}")
        table = np.full((self.query_rows.size, k), -1, dtype=np.int64)
        position = np.searchsorted(np.sort(self.query_rows), src.user_rows)
        order = np.argsort(self.query_rows, kind="stable")
        keep = src.rank < k
        table[order[position[keep]], src.rank[keep]] = src.cand_rows[keep]
        return table


def _fallback_order(pop: Population, rows: RowArray, neutral: float) -> RowArray:
    """``rows`` sorted by quality desc (missing → neutral), account age asc, user id asc."""
    quality = _fallback_quality(pop, rows, neutral)
    age = np.where(np.isnan(pop.account_age_days[rows]), np.inf, pop.account_age_days[rows])
    return rows[np.lexsort((pop.user_ids[rows], age, -quality))]


def _fallback_quality(pop: Population, rows: RowArray, neutral: float) -> npt.NDArray[np.float64]:
    raw = pop.rating_quality[rows].astype(np.float64)
    ok = pop.has_rating_quality[rows] & np.isfinite(raw)
    return np.where(ok, raw, neutral)


def _source_unit_vectors(
    pop: Population, name: str
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    if name == "quiz":
        return signals.unit_rows(pop.quiz_vectors, pop.has_quiz)
    return signals.unit_rows(pop.interest_vectors, pop.has_interest)


def _build_index(
    vectors: npt.NDArray[np.float32], params: CandidateParams, rng: np.random.Generator
) -> Any:
    n, dim = vectors.shape
    if n < params.exact_below:
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        return index
    nlist = max(1, min(n, round(params.nlist_factor * np.sqrt(n))))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = int(rng.integers(0, 2**31 - 1))
    n_train = min(n, params.train_points_per_list * nlist)
    sample = np.sort(rng.choice(n, size=n_train, replace=False))
    index.train(np.ascontiguousarray(vectors[sample]))
    index.add(vectors)
    return index


def build_indexes(
    pop: Population, params: CandidateParams, rng: np.random.Generator
) -> CandidateIndexes:
    """Build the partitioned indexes over all active users of ``pop``.

    Parameters
    ----------
    pop : Population
        Cleaned population (see :func:`compute.population.clean_population`).
    params : CandidateParams
    rng : numpy.random.Generator
        Source of IVF training samples and k-means seeds (same rng state → same indexes).

    Returns
    -------
    CandidateIndexes
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    valid_gender = (pop.gender >= 0) & (pop.gender < 3)
    eligible = np.flatnonzero(pop.active & valid_gender)
    cohort = filters.cohort_keys(pop.gender, pop.seeking_mask)
    if params.geo_cell_deg is None:
        cell = np.full(pop.n_users, _NO_CELL, dtype=np.int64)
    else:
        cell = geo.cell_ids(pop.lat, pop.lon, params.geo_cell_deg)
    if params.age_band_years is None:
        band = np.zeros(pop.n_users, dtype=np.int64)
    else:
        years = np.nan_to_num(pop.age.astype(np.float64), nan=0.0)
        band = np.clip(years // params.age_band_years, 0, _BAND_SPAN - 1).astype(np.int64)
    key = (cohort[eligible] * _BAND_SPAN + band[eligible]) * _CELL_SPAN + (cell[eligible] + 1)
    partition_keys, partition_of = np.unique(key, return_inverse=True)
    partition_of = partition_of.reshape(-1)
    n_partitions = partition_keys.size
    limits = pop.max_distance_km[eligible].astype(np.float64)
    limits = np.where(np.isnan(limits), np.inf, limits)
    max_limit = np.full(n_partitions, -np.inf)
    np.maximum.at(max_limit, partition_of, limits)
    age_min = np.full(n_partitions, np.iinfo(np.int64).max)
    np.minimum.at(age_min, partition_of, pop.age_min[eligible].astype(np.int64))
    age_max = np.full(n_partitions, np.iinfo(np.int64).min)
    np.maximum.at(age_max, partition_of, pop.age_max[eligible].astype(np.int64))

    # Members of each partition, ascending row (eligible is ascending; stable sort).
    order = np.argsort(partition_of, kind="stable")
    members_all = eligible[order]
    indptr_all = np.concatenate([[0], np.cumsum(np.bincount(partition_of, minlength=n_partitions))])

    sources = []
    for name in VECTOR_SOURCES:
        unit, valid = _source_unit_vectors(pop, name)
        keep = valid[members_all]
        member_rows = members_all[keep]
        counts = np.bincount(partition_of[order][keep], minlength=n_partitions)
        member_indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        indexes = tuple(
            _build_index(unit[member_rows[member_indptr[p] : member_indptr[p + 1]]], params, rng)
            if counts[p] > 0
            else None
            for p in range(n_partitions)
        )
        sources.append(SourceIndex(name, member_indptr, member_rows, indexes))
    fallback_rows = np.concatenate(
        [
            _fallback_order(
                pop, members_all[indptr_all[p] : indptr_all[p + 1]], params.fallback_neutral_quality
            )
            for p in range(n_partitions)
        ]
        or [np.empty(0, dtype=np.int64)]
    ).astype(np.int64)
    sources.append(
        SourceIndex("fallback", indptr_all.astype(np.int64), fallback_rows, (None,) * n_partitions)
    )
    return CandidateIndexes(
        n_users=pop.n_users,
        partition_cohort=(partition_keys // _CELL_SPAN // _BAND_SPAN).astype(np.int64),
        partition_age_band=(partition_keys // _CELL_SPAN % _BAND_SPAN).astype(np.int64),
        partition_age_min=age_min,
        partition_age_max=age_max,
        age_band_years=params.age_band_years,
        partition_cell=(partition_keys % _CELL_SPAN - 1).astype(np.int64),
        partition_max_distance_km=max_limit,
        geo_cell_deg=params.geo_cell_deg,
        sources=tuple(sources),
        reverse_excluded_keys=blockscore.transposed_exclusion_keys(pop),
        features=blockterms.user_features(pop),
    )


def _search_mask(
    pop: Population,
    indexes: CandidateIndexes,
    query_rows: RowArray,
    filter_params: filters.FilterParams,
) -> npt.NDArray[np.bool_]:
    """(q, P) bool: which partitions each query row searches."""
    query_cohort = filters.cohort_keys(pop.gender[query_rows], pop.seeking_mask[query_rows])
    mask = filters.cohorts_compatible(query_cohort[:, None], indexes.partition_cohort[None, :])
    if filter_params.enforce_age:
        # Member ages floor into [age_min_q, age_max_q] ⇔ age ∈ [age_min_q, age_max_q + 1).
        years = np.floor(pop.age[query_rows].astype(np.float64))
        mask &= (indexes.partition_age_min[None, :] <= years[:, None]) & (
            years[:, None] <= indexes.partition_age_max[None, :]
        )
        if indexes.age_band_years is not None:
            width = indexes.age_band_years
            band_lo = indexes.partition_age_band * width
            lo = pop.age_min[query_rows].astype(np.int64)
            hi = pop.age_max[query_rows].astype(np.int64) + 1
            mask &= (band_lo[None, :] < hi[:, None]) & (lo[:, None] < band_lo[None, :] + width)
    if indexes.geo_cell_deg is None or not filter_params.enforce_distance:
        return mask
    limit = pop.max_distance_km[query_rows].astype(np.float64)
    limit = np.where(np.isnan(limit), np.inf, limit)
    located = np.flatnonzero(indexes.partition_cell != _NO_CELL)
    if located.size == 0 or query_rows.size == 0:
        return mask
    # One bound per distinct cell (tens), not per partition (thousands).
    cells, cell_of = np.unique(indexes.partition_cell[located], return_inverse=True)
    bound = geo.min_distance_to_cell_km(
        pop.lat[query_rows][:, None],
        pop.lon[query_rows][:, None],
        cells[None, :],
        indexes.geo_cell_deg,
    )[:, cell_of.reshape(-1)]
    reach = np.minimum(limit[:, None], indexes.partition_max_distance_km[located][None, :])
    mask[:, located] &= bound <= reach
    return mask


def _next_pow2(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    return np.left_shift(1, np.ceil(np.log2(np.maximum(values, 1))).astype(np.int64))


def _rank_keys(
    pop: Population,
    source: str,
    unit: npt.NDArray[np.float32] | None,
    user_rows: RowArray,
    cand_rows: RowArray,
    params: CandidateParams,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(primary desc, secondary asc) ranking keys per pair, recomputed in float64."""
    if source == "fallback":
        quality = _fallback_quality(pop, cand_rows, params.fallback_neutral_quality)
        age = pop.account_age_days[cand_rows].astype(np.float64)
        return quality, np.where(np.isnan(age), np.inf, age)
    assert unit is not None
    sim = np.einsum("ij,ij->i", unit[user_rows], unit[cand_rows], dtype=np.float64)
    return sim, np.zeros(sim.shape)


def _complete(
    positions: RowArray,
    primary: npt.NDArray[np.float64],
    bound: npt.NDArray[np.float64],
    need: int,
    *,
    strict: bool,
) -> npt.NDArray[np.bool_]:
    """(pending,) bool: a query's top ``need`` survivors can no longer change.

    True when nothing is left to fetch (``bound = -inf``), or when the ``need``-th best
    survivor beats every unfetched member: ``primary ≥ bound + ε`` (ε = 1e-5 absorbs
    FAISS float32 rounding) or, for the fallback's tied quality levels, ``> bound``.
    """
    n_pending = bound.size
    counts = np.bincount(positions, minlength=n_pending)
    order = np.lexsort((-primary, positions))
    starts = np.cumsum(counts) - counts
    enough = counts >= need
    kth = np.full(n_pending, -np.inf)
    kth[enough] = primary[order[starts[enough] + need - 1]]
    beats = kth > bound if strict else kth >= bound + 1e-5
    return np.isneginf(bound) | (enough & beats)


def _search_source(
    pop: Population,
    indexes: CandidateIndexes,
    source: str,
    query_rows: RowArray,
    search_mask: npt.NDArray[np.bool_],
    params: CandidateParams,
    filter_params: filters.FilterParams,
) -> tuple[SourcePairs, dict[str, int]]:
    """Search one source for ``query_rows`` with filter-aware deepening (see module doc)."""
    k = params.k_for(source)
    src = indexes.source(source)
    unit = None if source == "fallback" else _source_unit_vectors(pop, source)[0]
    n_excluded = np.diff(pop.excluded_indptr)[query_rows]
    fetch = _next_pow2(k + params.margin + n_excluded)
    partition_sizes = np.diff(src.member_indptr)
    # Per-query deepening level: fetch and (IVF) nprobe both grow by `growth` per level.
    level = np.zeros(query_rows.size, dtype=np.int64)

    done_users: list[RowArray] = []
    done_cands: list[RowArray] = []
    removed_total: dict[str, int] = dict.fromkeys(filters.FILTER_ORDER, 0)
    pending = np.arange(query_rows.size)
    position_of_row = np.full(pop.n_users, -1, dtype=np.int64)
    while pending.size and k > 0:
        found_q: list[RowArray] = []
        found_c: list[RowArray] = []
        # Best possible similarity of any member not yet fetched, per pending query
        # (-inf once every searched partition is exhausted).
        bound = np.full(pending.size, -np.inf)
        for p in np.flatnonzero(partition_sizes > 0):
            local = np.flatnonzero(search_mask[pending, p])
            if local.size == 0:
                continue
            members = src.member_rows[src.member_indptr[p] : src.member_indptr[p + 1]]
            group_keys = fetch[pending[local]] * 64 + level[pending[local]]
            for group_key in np.unique(group_keys):
                group = local[group_keys == group_key]
                fetch_size, group_level = divmod(int(group_key), 64)
                kk = min(fetch_size, members.size)
                may_widen = False
                q_rows = query_rows[pending[group]]
                if source == "fallback":
                    ids = np.broadcast_to(np.arange(kk), (group.size, kk))
                    sims = np.broadcast_to(
                        _fallback_quality(pop, members[:kk], params.fallback_neutral_quality),
                        (group.size, kk),
                    )
                else:
                    assert unit is not None
                    index = src.indexes[p]
                    extra = {}
                    if isinstance(index, faiss.IndexIVF):
                        nprobe = min(index.nlist, params.nprobe * params.growth**group_level)
                        extra = {"params": faiss.SearchParametersIVF(nprobe=nprobe)}
                        may_widen = nprobe < index.nlist
                    sims, ids = index.search(np.ascontiguousarray(unit[q_rows]), kk, **extra)
                valid = ids >= 0
                # A -1 means the probed IVF lists ran dry: more only if nprobe can grow.
                more = (kk < members.size) & (valid.all(axis=1) | may_widen)
                last = np.where(valid[:, -1], sims[:, -1], np.inf)
                bound[group] = np.maximum(bound[group], np.where(more, last, -np.inf))
                found_q.append(np.repeat(q_rows, valid.sum(axis=1)))
                found_c.append(members[ids[valid]])
        users = np.concatenate(found_q) if found_q else np.empty(0, dtype=np.int64)
        cands = np.concatenate(found_c) if found_c else np.empty(0, dtype=np.int64)
        keep, removed = filters.mutual_filter(pop, users, cands, filter_params)
        users, cands = users[keep], cands[keep]
        position_of_row[query_rows[pending]] = np.arange(pending.size)
        finished = _complete(
            position_of_row[users],
            _rank_keys(pop, source, unit, users, cands, params)[0],
            bound,
            k + params.margin,
            strict=source == "fallback",
        )
        finished_rows = query_rows[pending[finished]]
        take = np.isin(users, finished_rows)
        done_users.append(users[take])
        done_cands.append(cands[take])
        for name, count in removed.items():
            removed_total[name] += count
        pending = pending[~finished]
        fetch[pending] = fetch[pending] * params.growth
        level[pending] += 1

    users = np.concatenate(done_users) if done_users else np.empty(0, dtype=np.int64)
    cands = np.concatenate(done_cands) if done_cands else np.empty(0, dtype=np.int64)
    primary, secondary = _rank_keys(pop, source, unit, users, cands, params)
    order = np.lexsort((pop.user_ids[cands], secondary, -primary, users))
    sorted_users = users[order]
    first = np.r_[True, sorted_users[1:] != sorted_users[:-1]] if order.size else np.empty(0, bool)
    rank = np.arange(order.size) - np.maximum.accumulate(np.where(first, np.arange(order.size), 0))
    top = rank < k
    pairs = SourcePairs(
        name=source,
        user_rows=sorted_users[top],
        cand_rows=cands[order][top],
        similarity=primary[order][top],
        rank=rank[top].astype(np.int32),
    )
    return pairs, removed_total


def _with_query_exclusions(pop: Population, query_rows: RowArray) -> Population:
    """A shallow copy of ``pop`` whose exclusion keys are only those touching ``query_rows``.

    Equivalent to ``pop`` for :func:`compute.filters.is_excluded` on any pair with a query
    row on one side (the keys stay sorted: a subsequence of sorted keys).
    """
    keys = pop.excluded_keys
    if keys.size == 0 or query_rows.size * 4 > pop.n_users:
        return pop
    n = max(pop.n_users, 1)
    is_query = np.zeros(pop.n_users, dtype=np.bool_)
    is_query[query_rows] = True
    touching = is_query[keys // n] | is_query[keys % n]
    narrowed = copy.copy(pop)
    object.__setattr__(narrowed, "excluded_keys", keys[touching])
    return narrowed


def _block_members(indexes: CandidateIndexes, partitions: RowArray) -> RowArray:
    """Sorted rows of every member of ``partitions`` (all sources' members, i.e. fallback)."""
    src = indexes.source("fallback")
    starts = src.member_indptr[partitions]
    lengths = src.member_indptr[partitions + 1] - starts
    offsets = np.cumsum(lengths) - lengths
    entries = np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
    return np.sort(src.member_rows[entries])


def _group_keys(pop: Population, indexes: CandidateIndexes, rows: RowArray) -> RowArray:
    """(q,) int64 query-group key of each row: (filter cohort, own age band, geo cell).

    Rows of one group search nearly the same partitions: same gender filters, similar age
    ranges (the seeded and the real ranges follow the user's own age) and the same cell.
    """
    cohort = filters.cohort_keys(pop.gender[rows], pop.seeking_mask[rows])
    if indexes.geo_cell_deg is None:
        cell = np.full(rows.size, _NO_CELL, dtype=np.int64)
    else:
        cell = geo.cell_ids(pop.lat[rows], pop.lon[rows], indexes.geo_cell_deg)
    years = np.nan_to_num(pop.age[rows].astype(np.float64), nan=0.0)
    band = np.clip(years // (indexes.age_band_years or _GROUP_BAND_YEARS), 0, _BAND_SPAN - 1)
    return (cohort * _BAND_SPAN + band.astype(np.int64)) * _CELL_SPAN + (cell + 1)


def _query_groups(pop: Population, indexes: CandidateIndexes, rows: RowArray) -> list[RowArray]:
    """Query rows grouped by :func:`_group_keys`, each group sorted."""
    keys = _group_keys(pop, indexes, rows)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    cuts = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    return [np.sort(g) for g in np.split(rows[order], cuts)] if rows.size else []


def search_order(pop: Population, indexes: CandidateIndexes) -> RowArray:
    """Every row of ``pop``, the rows of one query group next to each other.

    Cut into shards, this order puts a query group in as few shards as its size allows,
    so a group's block (its candidates' features and interest matrix) is built once per
    shard it spans, not once per shard that holds a few of its rows scattered among
    others. Results do not depend on the order: a row's candidates are the same in any
    batch.

    Parameters
    ----------
    pop : Population
    indexes : CandidateIndexes
        Built from ``pop`` (their age bands and geo cells define the groups).

    Returns
    -------
    (n,) int64
        A permutation of ``range(pop.n_users)``.
    """
    rows = np.arange(pop.n_users, dtype=np.int64)
    return rows[np.argsort(_group_keys(pop, indexes, rows), kind="stable")]


def _faiss_pairs(
    pop: Population,
    indexes: CandidateIndexes,
    rows: RowArray,
    search_mask: npt.NDArray[np.bool_],
    params: CandidateParams,
    filter_params: filters.FilterParams,
) -> tuple[list[SourcePairs], dict[str, int]]:
    """Each indexed source's filtered neighbour lists for ``rows`` (see module doc)."""
    # Every pair searched below has a query row on one side, so only exclusions touching a
    # query row can matter: binary-searching that small set instead of every exclusion of
    # the population was a fifth of the search time at 100k users.
    search_pop = _with_query_exclusions(pop, rows)
    has_vector = {name: _source_unit_vectors(pop, name)[1][rows] for name in VECTOR_SOURCES}
    askers = {
        "quiz": has_vector["quiz"],
        "interest": has_vector["interest"],
        "fallback": ~(has_vector["quiz"] | has_vector["interest"]),
    }
    per_source: list[SourcePairs] = []
    removed_total: dict[str, int] = dict.fromkeys(filters.FILTER_ORDER, 0)
    for name in INDEXED_SOURCES:
        subset = np.flatnonzero(askers[name])
        pairs, removed = _search_source(
            search_pop, indexes, name, rows[subset], search_mask[subset], params, filter_params
        )
        per_source.append(pairs)
        for key, count in removed.items():
            removed_total[key] += count
    return per_source, removed_total


def _empty_pairs(name: str) -> SourcePairs:
    return SourcePairs(
        name=name,
        user_rows=np.empty(0, np.int64),
        cand_rows=np.empty(0, np.int64),
        similarity=np.empty(0, np.float64),
        rank=np.empty(0, np.int32),
    )


def _concat_pairs(name: str, parts: list[SourcePairs]) -> SourcePairs:
    parts = [p for p in parts if p.user_rows.size] or [_empty_pairs(name)]
    user_rows = np.concatenate([p.user_rows for p in parts])
    rank = np.concatenate([p.rank for p in parts])
    order = np.lexsort((rank, user_rows))
    return SourcePairs(
        name=name,
        user_rows=user_rows[order],
        cand_rows=np.concatenate([p.cand_rows for p in parts])[order],
        similarity=np.concatenate([p.similarity for p in parts])[order],
        rank=rank[order],
    )


def generate_candidates(
    pop: Population,
    indexes: CandidateIndexes,
    query_rows: npt.ArrayLike,
    params: CandidateParams | None = None,
    filter_params: filters.FilterParams | None = None,
    score_params: scoring.ScoreParams | None = None,
    *,
    exposure_counts: npt.NDArray[np.int64] | None = None,
) -> CandidatePool:
    """Candidates for ``query_rows`` (a shard, or one user) against the whole population.

    Parameters
    ----------
    pop : Population
        The population ``indexes`` was built from.
    indexes : CandidateIndexes
    query_rows : (q,) int
        Distinct rows to generate candidates for.
    params : CandidateParams, optional
    filter_params : FilterParams, optional
    score_params : ScoreParams, optional
        The score the candidates are ranked by (weights, neutral value, reciprocal
        fusion, dormancy, exposure cap); pass the one ``score_pairs`` will use.
    exposure_counts : (n,) int, optional
        Global uncapped top-K counts (ranking applies the exposure cap only with them).

    Returns
    -------
    CandidatePool
        At most ``score_params.top_k + params.margin`` pairs per query row; every pair
        passes :func:`compute.filters.mutual_filter`.
    """
    params = params or CandidateParams()
    filter_params = filter_params or filters.FilterParams()
    score_params = score_params or scoring.ScoreParams()
    if indexes.n_users != pop.n_users:
        raise ValueError(f"indexes were built for {indexes.n_users} users; pop has {pop.n_users}")
    rows = np.asarray(query_rows)
    if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
        raise TypeError(f"query_rows must be a 1-D integer array; got {rows.dtype} {rows.shape}")
    rows = rows.astype(np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= pop.n_users):
        raise ValueError(
            f"query_rows must be in [0, {pop.n_users}); got [{rows.min()}, {rows.max()}]"
        )
    if np.unique(rows).size != rows.size:
        raise ValueError("query_rows must be distinct")

    keep = score_params.top_k + params.margin
    ranked: list[blockscore.RankedBlock] = []
    block_bits: list[npt.NDArray[np.uint8]] = []
    exact_parts: list[SourcePairs] = []
    faiss_lists: dict[str, list[SourcePairs]] = {name: [] for name in INDEXED_SOURCES}
    removed_total: dict[str, int] = dict.fromkeys(filters.FILTER_ORDER, 0)
    member_counts = np.diff(indexes.source("fallback").member_indptr)
    for group_rows in _query_groups(pop, indexes, rows):
        group_mask = _search_mask(pop, indexes, group_rows, filter_params)
        # Exact or FAISS is decided per row (by the candidates that row can reach), so a
        # row takes the same path alone as inside any batch.
        reach = group_mask.astype(np.int64) @ member_counts
        for exact in (True, False):
            chosen = np.flatnonzero((reach < params.exact_below) == exact)
            if chosen.size == 0:
                continue
            group, mask = group_rows[chosen], group_mask[chosen]
            block = _block_members(indexes, np.flatnonzero(mask.any(axis=0)))
            if block.size == 0:
                continue
            allowed = None
            if not exact:
                lists, removed = _faiss_pairs(pop, indexes, group, mask, params, filter_params)
                for key, count in removed.items():
                    removed_total[key] += count
                for found in lists:
                    faiss_lists[found.name].append(found)
                users = np.concatenate([f.user_rows for f in lists])
                cands = np.concatenate([f.cand_rows for f in lists])
                block = np.unique(cands)
                allowed = (np.searchsorted(group, users), cands)
            result = blockscore.rank_block(
                pop,
                group,
                block,
                score_params,
                filter_params,
                keep,
                exposure_counts=exposure_counts,
                reverse_exclusion_keys=indexes.reverse_excluded_keys,
                allowed=allowed,
                features=indexes.features,
            )
            if allowed is None:
                for key, count in result.removed.items():
                    removed_total[key] += count
                block_bits.append(np.full(result.user_rows.size, SOURCE_BITS["block"], np.uint8))
                exact_parts.append(
                    SourcePairs(
                        "block",
                        result.user_rows,
                        result.cand_rows,
                        result.score.astype(np.float64),
                        result.rank,
                    )
                )
            else:
                n = max(pop.n_users, 1)
                found_keys = np.concatenate([f.user_rows * n + f.cand_rows for f in lists])
                found_bits = np.concatenate(
                    [np.full(f.user_rows.size, SOURCE_BITS[f.name], np.uint8) for f in lists]
                )
                unique_keys, inverse = np.unique(found_keys, return_inverse=True)
                bits = np.zeros(unique_keys.size, dtype=np.uint8)
                np.bitwise_or.at(bits, inverse.reshape(-1), found_bits)
                where = np.searchsorted(unique_keys, result.user_rows * n + result.cand_rows)
                block_bits.append(bits[where])
            ranked.append(result)

    per_source = [_concat_pairs(name, faiss_lists[name]) for name in INDEXED_SOURCES]
    per_source.append(_concat_pairs("block", exact_parts))
    all_users = np.concatenate([r.user_rows for r in ranked] or [np.empty(0, np.int64)])
    all_cands = np.concatenate([r.cand_rows for r in ranked] or [np.empty(0, np.int64)])
    all_bits = np.concatenate(block_bits or [np.empty(0, np.uint8)])
    order = np.lexsort((all_cands, all_users))
    return CandidatePool(
        query_rows=rows,
        user_rows=all_users[order],
        cand_rows=all_cands[order],
        sources=all_bits[order],
        source_pairs=tuple(per_source),
        source_counts={s.name: int(s.user_rows.size) for s in per_source},
        filter_removed=removed_total,
    )


def exact_candidates(
    pop: Population,
    query_rows: npt.ArrayLike,
    source: str,
    k: int,
    filter_params: filters.FilterParams | None = None,
) -> tuple[RowArray, npt.NDArray[np.float64]]:
    """Exhaustive top-k of one vector source over every eligible candidate (recall audit).

    Every active row with a vector is scored against each query row, pairs failing
    :func:`compute.filters.mutual_filter` are dropped, and the rest are ranked by
    cosine desc, candidate user id asc — the same order as :func:`generate_candidates`.

    Returns
    -------
    (cand_rows, similarity) : (q, k) int64 (-1 pad) and (q, k) float64 (NaN pad)
    """
    if source not in VECTOR_SOURCES:
        raise ValueError(f"source must be one of {VECTOR_SOURCES}; got {source!r}")
    filter_params = filter_params or filters.FilterParams()
    rows = np.asarray(query_rows, dtype=np.int64)
    unit, valid = _source_unit_vectors(pop, source)
    eligible = np.flatnonzero(valid & pop.active)
    table = np.full((rows.size, k), -1, dtype=np.int64)
    sims = np.full((rows.size, k), np.nan)
    chunk = max(1, (1 << 22) // max(eligible.size, 1))
    for start in range(0, rows.size, chunk):
        positions = np.arange(start, min(start + chunk, rows.size))
        q = rows[positions]
        q_valid = valid[q]
        users = np.repeat(q[q_valid], eligible.size)
        slots = np.repeat(positions[q_valid], eligible.size)
        cands = np.tile(eligible, int(q_valid.sum()))
        keep, _ = filters.mutual_filter(pop, users, cands, filter_params)
        users, cands, slots = users[keep], cands[keep], slots[keep]
        sim = np.einsum("ij,ij->i", unit[users], unit[cands], dtype=np.float64)
        order = np.lexsort((pop.user_ids[cands], -sim, slots))
        sorted_slots = slots[order]
        first = (
            np.r_[True, sorted_slots[1:] != sorted_slots[:-1]] if order.size else np.empty(0, bool)
        )
        rank = np.arange(order.size) - np.maximum.accumulate(
            np.where(first, np.arange(order.size), 0)
        )
        top = rank < k
        table[sorted_slots[top], rank[top]] = cands[order][top]
        sims[sorted_slots[top], rank[top]] = sim[order][top]
    return table, sims


def recall_at_k(approx_ids: npt.ArrayLike, exact_ids: npt.ArrayLike) -> float:
    """Fraction of exact neighbours that the approximate search found.

    ``recall = Σ_q |A_q ∩ E_q| / Σ_q |E_q|`` over valid (≥ 0) ids; 1.0 when E is empty.

    Parameters
    ----------
    approx_ids, exact_ids : (q, k_a) and (q, k_e) int, -1 = none
    """
    approx = np.asarray(approx_ids)
    exact = np.asarray(exact_ids)
    if approx.ndim != 2 or exact.ndim != 2 or approx.shape[0] != exact.shape[0]:
        raise ValueError(
            f"approx_ids and exact_ids must be 2-D with equal rows; got {approx.shape} "
            f"and {exact.shape}"
        )
    span = int(max(approx.max(initial=0), exact.max(initial=0))) + 1
    rows_a = np.broadcast_to(np.arange(approx.shape[0])[:, None], approx.shape)
    rows_e = np.broadcast_to(np.arange(exact.shape[0])[:, None], exact.shape)
    keys_a = (rows_a * span + approx)[approx >= 0]
    keys_e = (rows_e * span + exact)[exact >= 0]
    if keys_e.size == 0:
        return 1.0
    return float(np.isin(keys_e, keys_a).sum() / keys_e.size)
