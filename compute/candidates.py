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
    seeded 100k populations (realistic or dense cities, 1° cells) every block is exact
    (reach ≤ ~7k candidates); BENCHMARKS.md "Candidate generation" measured it faster than
    the FAISS lists at every reach, and the only path meeting recall 0.98.

FAISS neighbour lists (rows reaching ``exact_below`` candidates or more)
    :mod:`compute.neighbours`: per-partition FAISS indexes over quiz and interest vectors
    and a fallback ranking; the union of the lists is ranked by the same exact block
    scorer (restricted to those pairs) and trimmed to ``top_k + margin``. This path only
    approximates the exhaustive top K.

Everything about a user depends only on that user and the candidates its filters reach,
so a user's candidates computed alone equal that user's candidates inside any batch.
Each pair records which source found it (``block`` for the exact path).

Why one file of ~610 lines: partitioning, the exact blocked ranking and the choice between
it and FAISS are one decision made per partition (the FAISS lists are compute.neighbours).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, fields
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from compute import blockscore, blockterms, filters, geo, neighbours, scoring
from compute.neighbours import INDEXED_SOURCES as INDEXED_SOURCES
from compute.neighbours import VECTOR_SOURCES as VECTOR_SOURCES
from compute.neighbours import SourceIndex, SourcePairs
from compute.neighbours import exact_candidates as exact_candidates
from compute.neighbours import recall_at_k as recall_at_k
from compute.population import Population

SOURCES: tuple[str, ...] = ("quiz", "interest", "fallback", "block")
ANN_INDEXES: tuple[str, ...] = ("ivf", "hnsw")
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
        scoring of every pair); the others use FAISS neighbour lists.
    flat_below : int ≥ 1 or None
        Partitions with fewer vectors are searched exactly (``IndexFlatIP``); None = the
        ``exact_below`` figure.
    ann_index : {"ivf", "hnsw"}
        The approximate index of partitions with ``flat_below`` vectors or more:
        ``IndexIVFFlat`` (``nlist_factor``, ``nprobe``) or ``IndexHNSWFlat`` (``hnsw_m``,
        ``ef_construction``, ``ef_search``).
    nlist_factor : float > 0
        IVF lists = round(nlist_factor · √N), at least 1.
    nprobe : int ≥ 1
        IVF lists probed per query.
    train_points_per_list : int ≥ 1
        IVF training sample size = min(N, train_points_per_list · nlist).
    hnsw_m : int ≥ 2
        HNSW links per node.
    ef_construction, ef_search : int ≥ 1
        HNSW candidate-list depth while building and while searching (a search of k
        neighbours uses ``max(ef_search, k)``).
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
    exact_below: int = 1_000_000
    flat_below: int | None = None
    nlist_factor: float = 4.0
    nprobe: int = 64
    train_points_per_list: int = 64
    ann_index: str = "ivf"
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: int = 64
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
            "hnsw_m": self.hnsw_m >= 2,
            "ef_construction": self.ef_construction >= 1,
            "ef_search": self.ef_search >= 1,
            "margin": self.margin >= 0,
            "growth": self.growth >= 2,
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if not isinstance(value, int) or not ok:
                raise ValueError(f"{name} must be an int in its documented range; got {value!r}")
        if self.flat_below is not None and not (
            isinstance(self.flat_below, int) and self.flat_below >= 1
        ):
            raise ValueError(f"flat_below must be None or an int >= 1; got {self.flat_below!r}")
        if self.ann_index not in ANN_INDEXES:
            raise ValueError(f"ann_index must be one of {ANN_INDEXES}; got {self.ann_index!r}")
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

    sources = neighbours.build_sources(
        pop, members_all, partition_of[order], indptr_all, n_partitions, params, rng
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
) -> tuple[npt.NDArray[np.bool_], RowArray]:
    """``(mask, columns)``: which partitions each query row searches, as a (q, k) bool mask
    over the ``columns`` (k,) of the partitions any row could search (ascending); every
    other partition is searched by no row.

    The rules are per row; ``columns`` first drops what no row of the batch can reach by
    gender, age or age band (the batch's loosest bounds), so the per-row rules run on the
    tens of partitions a query group reaches, not on every partition of the population.
    """
    query_cohort = filters.cohort_keys(pop.gender[query_rows], pop.seeking_mask[query_rows])
    cohorts = np.unique(query_cohort)
    columns = np.flatnonzero(
        filters.cohorts_compatible(cohorts[:, None], indexes.partition_cohort[None, :]).any(axis=0)
    )
    years = np.floor(pop.age[query_rows].astype(np.float64))
    lo = pop.age_min[query_rows].astype(np.int64)
    hi = pop.age_max[query_rows].astype(np.int64) + 1
    if filter_params.enforce_age and query_rows.size:
        # Member ages floor into [age_min_q, age_max_q] ⇔ age ∈ [age_min_q, age_max_q + 1).
        # NaN years compare false in the per-row rule below: nanmin/nanmax keep the others'.
        keep = np.ones(columns.size, dtype=np.bool_)
        if np.isfinite(years).any():
            keep &= (indexes.partition_age_min[columns] <= np.nanmax(years)) & (
                np.nanmin(years) <= indexes.partition_age_max[columns]
            )
        else:
            keep[:] = False
        if indexes.age_band_years is not None:
            band_lo = indexes.partition_age_band[columns] * indexes.age_band_years
            keep &= (band_lo < hi.max()) & (lo.min() < band_lo + indexes.age_band_years)
        columns = columns[keep]
    mask = filters.cohorts_compatible(
        query_cohort[:, None], indexes.partition_cohort[columns][None, :]
    )
    if filter_params.enforce_age:
        mask &= (indexes.partition_age_min[columns][None, :] <= years[:, None]) & (
            years[:, None] <= indexes.partition_age_max[columns][None, :]
        )
        if indexes.age_band_years is not None:
            width = indexes.age_band_years
            band_lo = indexes.partition_age_band[columns] * width
            mask &= (band_lo[None, :] < hi[:, None]) & (lo[:, None] < band_lo[None, :] + width)
    if indexes.geo_cell_deg is None or not filter_params.enforce_distance:
        return mask, columns
    limit = pop.max_distance_km[query_rows].astype(np.float64)
    limit = np.where(np.isnan(limit), np.inf, limit)
    located = np.flatnonzero(indexes.partition_cell[columns] != _NO_CELL)
    if located.size == 0 or query_rows.size == 0:
        return mask, columns
    # One bound per distinct cell, not per partition.
    cells, cell_of = np.unique(indexes.partition_cell[columns[located]], return_inverse=True)
    bound = geo.min_distance_to_cell_km(
        pop.lat[query_rows][:, None],
        pop.lon[query_rows][:, None],
        cells[None, :],
        indexes.geo_cell_deg,
    )[:, cell_of.reshape(-1)]
    reach = np.minimum(limit[:, None], indexes.partition_max_distance_km[columns[located]][None, :])
    mask[:, located] &= bound <= reach
    return mask, columns


def _full_mask(
    mask: npt.NDArray[np.bool_], columns: RowArray, n_partitions: int
) -> npt.NDArray[np.bool_]:
    """(q, P) bool: :func:`_search_mask`'s mask over every partition."""
    full = np.zeros((mask.shape[0], n_partitions), dtype=np.bool_)
    full[:, columns] = mask
    return full


def reach_counts(
    pop: Population,
    indexes: CandidateIndexes,
    query_rows: npt.ArrayLike,
    filter_params: filters.FilterParams | None = None,
) -> RowArray:
    """(q,) int64: candidates in the partitions each query row searches.

    What :func:`generate_candidates` compares with ``CandidateParams.exact_below`` to choose
    a row's path (exact blocked ranking below it, FAISS lists from it on).
    """
    filter_params = filter_params or filters.FilterParams()
    rows = np.asarray(query_rows, dtype=np.int64)
    member_counts = np.diff(indexes.source("fallback").member_indptr)
    reach = np.zeros(rows.size, dtype=np.int64)
    # Chunked: the (q, P) mask of a whole population would be rows × partitions bytes.
    step = max(1, (1 << 24) // max(indexes.n_partitions, 1))
    for start in range(0, rows.size, step):
        chunk = rows[start : start + step]
        mask, columns = _search_mask(pop, indexes, chunk, filter_params)
        reach[start : start + step] = mask.astype(np.int64) @ member_counts[columns]
    return reach


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
        group_mask, columns = _search_mask(pop, indexes, group_rows, filter_params)
        # Exact or FAISS is decided per row (by the candidates that row can reach), so a
        # row takes the same path alone as inside any batch.
        reach = group_mask.astype(np.int64) @ member_counts[columns]
        for exact in (True, False):
            chosen = np.flatnonzero((reach < params.exact_below) == exact)
            if chosen.size == 0:
                continue
            group, mask = group_rows[chosen], group_mask[chosen]
            block = _block_members(indexes, columns[mask.any(axis=0)])
            if block.size == 0:
                continue
            allowed = None
            if not exact:
                lists, removed = neighbours.faiss_pairs(
                    pop,
                    indexes.sources,
                    group,
                    _full_mask(mask, columns, indexes.n_partitions),
                    params,
                    filter_params,
                )
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

    per_source = [neighbours.concat_pairs(name, faiss_lists[name]) for name in INDEXED_SOURCES]
    per_source.append(neighbours.concat_pairs("block", exact_parts))
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
