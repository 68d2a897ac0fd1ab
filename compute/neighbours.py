"""FAISS neighbour lists: the candidate path for rows whose block is too large to rank densely.

Part of candidate generation (:mod:`compute.candidates`, whose module docstring describes
the partitions and when this path is taken); :func:`exact_candidates` and
:func:`recall_at_k` serve the recall audit.

``quiz`` and ``interest``: one FAISS index per partition over the L2-normalized
vectors of members that have one (inner product = cosine). ``IndexFlatIP`` when
the partition has fewer than ``flat_below`` (default ``exact_below``) vectors, else
(``ann_index``)
``IndexIVFFlat`` with ``nlist = round(nlist_factor · √N)`` trained on an ``rng``-chosen
sample with an ``rng``-derived k-means seed, searched with ``nprobe``; or
``IndexHNSWFlat`` with ``hnsw_m`` links, built with ``ef_construction`` and searched with
``max(ef_search, fetch)``. An HNSW graph is the same at every build only when FAISS adds
with one thread (as the Ray actors run); IVF builds are the same with any thread count.
``fallback``: for users with neither vector, candidates are ranked by rating
quality (missing → ``fallback_neutral_quality``), then by newest account, then by
user id, within the same compatible partitions.
Per source and user: ask each searched partition for ``f = next_pow2(k + margin +
n_excluded)`` neighbours, drop ``-1`` ids, apply :func:`compute.filters.mutual_filter`;
if fewer than ``k + margin`` survive and some partition still has unseen members,
repeat with ``f · growth`` (and IVF ``nprobe · growth``, HNSW ``efSearch ≥ f``). The union
of the sources' lists is then ranked by the same exact block scorer (restricted to those
pairs) and trimmed to ``top_k + margin``.
This path only approximates the exhaustive top K (it misses candidates that are far
by quiz and interest but win on the other signals); it exists for populations where
one city's compatible users outgrow dense scoring (≳ 20k per block).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import numpy.typing as npt

from compute import filters, signals
from compute.population import Population

if TYPE_CHECKING:
    from compute.candidates import CandidateParams

# Sources with a per-partition member list (CandidateIndexes.sources, in this order).
INDEXED_SOURCES: tuple[str, ...] = ("quiz", "interest", "fallback")
VECTOR_SOURCES: tuple[str, ...] = ("quiz", "interest")

RowArray = npt.NDArray[np.int64]


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
class SourcePairs:
    """One source's kept neighbours: (m,) aligned arrays sorted by (user row, rank)."""

    name: str
    user_rows: RowArray
    cand_rows: RowArray
    similarity: npt.NDArray[np.float64]
    rank: npt.NDArray[np.int32]


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
    if n < (params.exact_below if params.flat_below is None else params.flat_below):
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        return index
    if params.ann_index == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = params.ef_construction
        hnsw.add(vectors)
        return hnsw
    nlist = max(1, min(n, round(params.nlist_factor * np.sqrt(n))))
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = int(rng.integers(0, 2**31 - 1))
    n_train = min(n, params.train_points_per_list * nlist)
    sample = np.sort(rng.choice(n, size=n_train, replace=False))
    ivf.train(np.ascontiguousarray(vectors[sample]))
    ivf.add(vectors)
    return ivf


def build_sources(
    pop: Population,
    members_all: RowArray,
    partition_of_members: RowArray,
    indptr_all: RowArray,
    n_partitions: int,
    params: CandidateParams,
    rng: np.random.Generator,
) -> tuple[SourceIndex, ...]:
    """Every indexed source's per-partition member lists and indexes, in INDEXED_SOURCES order.

    ``members_all`` are the partitions' members (ascending row within a partition),
    ``partition_of_members`` their partition and ``indptr_all`` the partition offsets.
    """
    sources = []
    for name in VECTOR_SOURCES:
        unit, valid = _source_unit_vectors(pop, name)
        keep = valid[members_all]
        member_rows = members_all[keep]
        counts = np.bincount(partition_of_members[keep], minlength=n_partitions)
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
    return tuple(sources)


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
    src: SourceIndex,
    query_rows: RowArray,
    search_mask: npt.NDArray[np.bool_],
    params: CandidateParams,
    filter_params: filters.FilterParams,
) -> tuple[SourcePairs, dict[str, int]]:
    """Search one source for ``query_rows`` with filter-aware deepening (see module doc)."""
    source = src.name
    k = params.k_for(source)
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
        # Only partitions some pending query searches: a loop over all of them cost
        # O(partitions) Python steps per query group, seconds per shard at 30k partitions.
        searched = (partition_sizes > 0) & search_mask[pending].any(axis=0)
        for p in np.flatnonzero(searched):
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
                        search_params = faiss.SearchParametersIVF()
                        search_params.nprobe = nprobe
                        extra = {"params": search_params}
                        may_widen = nprobe < index.nlist
                    elif isinstance(index, faiss.IndexHNSW):
                        # faiss's bundled stubs omit the HNSW search parameters.
                        search_params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
                        search_params.efSearch = max(params.ef_search, kk)
                        extra = {"params": search_params}
                        # A graph walk may return fewer than kk: a deeper one may find more.
                        may_widen = True
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


def faiss_pairs(
    pop: Population,
    sources: tuple[SourceIndex, ...],
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
    for src in sources:
        subset = np.flatnonzero(askers[src.name])
        pairs, removed = _search_source(
            search_pop, src, rows[subset], search_mask[subset], params, filter_params
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


def concat_pairs(name: str, parts: list[SourcePairs]) -> SourcePairs:
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
