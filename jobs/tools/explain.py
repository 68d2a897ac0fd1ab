"""Why a pair scores what it scores, or what keeps it apart (``matchjobs explain``).

Read-only: loads the population the match job would load now, and answers, in order:

1. whether both users are in the scored population (active, valid rows);
2. which hard filter, in which direction, keeps the pair apart (``compute.filters``);
3. the pair's score signal by signal — weight, subscore, contribution, missing or not —
   recomputed with the same compute code, next to the stored ``match_scores`` row;
4. if the candidate is not in the user's list: whether candidate generation found it and
   it ranked below top K, or which source would have found it (its exact rank per source
   against that source's k).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from compute import candidates, filters, scoring, signals, sorting, spread
from jobs.config import Config
from jobs.match import core as match
from jobs.storage import schema, scores
from jobs.storage import signals as signal_store

DIRECTION_WORDS = {
    "self": "a user is never their own candidate",
    "inactive": "{who} is inactive",
    "gender": "{viewer} does not seek {other}'s gender",
    "age": "{other}'s age is outside {viewer}'s age range",
    "distance": "the distance is beyond {viewer}'s limit",
    "excluded": "{viewer} already {kind} {other}",
}
LIKE_VERBS = {"like": "liked", "pass": "passed", "block": "blocked"}
# The order the match job ranks a list in (compute.scoring.top_k_order), in words.
TIE_BREAK = (
    "equal scores are ordered by the exposure spread, a seeded hash of (user, candidate, "
    "version), not by id"
)


def explain_pair(
    engine: sa.Engine, config: Config, user_id: int, candidate_id: int, now: dt.datetime
) -> dict[str, Any]:
    settings = match.settings_from_config(config)
    with engine.connect() as conn:
        pop, _, _ = match.load_clean(conn, now, settings)
        users = signal_store.read(conn, schema.users, "id", np.array([user_id, candidate_id]))
        stored = scores.read_rows(conn, settings.version, np.array([user_id]))
        decisions = signal_store.read(
            conn,
            schema.likes,
            "user_id",
            np.array([user_id, candidate_id]),
            columns=("user_id", "target_id", "kind"),
        )
    result: dict[str, Any] = {
        "user_id": user_id,
        "candidate_id": candidate_id,
        "algorithm_version": settings.version,
        "config_hash": settings.config_hash,
    }
    # The list's own order, the API's: score desc, then the exposure spread (ties are not
    # all rank 1).
    stored = stored.assign(
        spread=sorting.spread_keys(
            stored["user_id"].to_numpy(),
            stored["candidate_id"].to_numpy(),
            spread.spread_seed(settings.version),
        )
    ).sort_values(["score", "spread"], ascending=[False, True], kind="stable")
    listed = stored["candidate_id"].to_numpy()
    row = stored[stored["candidate_id"] == candidate_id]
    result["stored"] = (
        None
        if row.empty
        else {
            "score": float(row["score"].iloc[0]),
            "rank": int(np.flatnonzero(listed == candidate_id)[0]) + 1,
            "subscores": {n: float(row[f"s_{n}"].iloc[0]) for n in schema.SUBSCORE_COLUMNS},
        }
    )
    rows_of = pd.Index(pop.user_ids)
    a, b = (int(rows_of.get_indexer([u])[0]) for u in (user_id, candidate_id))
    missing = [u for u, r in ((user_id, a), (candidate_id, b)) if r < 0]
    if missing:
        known = set(users["id"].tolist())
        result["verdict"] = "not_in_population"
        result["detail"] = [
            f"user {u} does not exist"
            if u not in known
            else f"user {u} is inactive or has an invalid profile row "
            "(see the match run's skipped counts)"
            for u in missing
        ]
        return result

    # The population stores an exclusion under both users; the likes rows say who acted and how.
    acted = {
        (int(r.user_id), int(r.target_id)): LIKE_VERBS.get(str(r.kind), str(r.kind))
        for r in decisions.itertuples(index=False)
        if {int(r.user_id), int(r.target_id)} == {user_id, candidate_id}
    }
    # A user paired with themself: both directions are the same one, reported once.
    directions = [(user_id, candidate_id)]
    if candidate_id != user_id:
        directions.append((candidate_id, user_id))
    failing = []
    for check in filters.directional_checks(pop, a, b):
        for ok, (viewer, other) in zip(
            (check.a_accepts_b, check.b_accepts_a), directions, strict=False
        ):
            if ok or (check.name == "excluded" and acted and (viewer, other) not in acted):
                continue
            failing.append(
                {
                    "filter": check.name,
                    "direction": f"{viewer} -> {other}",
                    "text": DIRECTION_WORDS[check.name].format(
                        viewer=f"user {viewer}",
                        other=f"user {other}",
                        who=f"user {other}",
                        kind=acted.get((viewer, other), "liked, passed or blocked"),
                    ),
                }
            )
    if failing:
        result["verdict"] = "filtered"
        result["filters"] = failing
        return result

    params = scoring.ScoreParams(**{**settings.scoring.__dict__, "exposure_cap": None})
    scored = scoring.score_pairs(pop, np.array([a]), np.array([b]), params)
    weights = scored.weights
    result["signals"] = [
        {
            "signal": name,
            "weight": round(float(weights[i]), 4),
            "subscore": round(float(scored.subscores[0, i]), 4),
            "contribution": round(float(weights[i] * scored.subscores[0, i]), 4),
            "missing": bool(scored.missing[0] >> i & 1),
        }
        for i, name in enumerate(signals.SIGNAL_NAMES)
    ]
    result["score"] = round(float(scored.score[0]), 4)
    result["forward_score"] = round(float(scored.forward_score[0]), 4)
    # Without fusion the scorer copies forward into reverse; the real b→a score is the
    # forward score of the pair the other way round (what the candidate's list holds).
    reverse = (
        scored.reverse_score[0]
        if params.reciprocal
        else scoring.score_pairs(pop, np.array([b]), np.array([a]), params).forward_score[0]
    )
    result["reverse_score"] = round(float(reverse), 4)
    result["reciprocal"] = params.reciprocal
    if settings.scoring.exposure_cap is not None:
        result["note"] = "exposure cap is on: the stored score may be lower than this one"
    if result["stored"] is not None:
        result["verdict"] = "listed"
        return result

    indexes = match.build_indexes(pop, settings)
    pool = candidates.generate_candidates(
        pop, indexes, np.array([a]), settings.candidates, settings.filters, params
    )
    generated = pool.cand_rows[pool.user_rows == a]
    if b in generated:
        result["verdict"] = "below_top_k"
        result["detail"] = [_cut_at_top_k(stored, result["score"], settings.scoring.top_k)]
        return result
    result["verdict"] = "not_generated"
    k_of = {"quiz": settings.candidates.k_quiz, "interest": settings.candidates.k_interest}
    ranks: dict[str, tuple[int | None, float, float | None]] = {}
    for source in candidates.VECTOR_SOURCES:
        table, sims = candidates.exact_candidates(
            pop, np.array([a]), source, pop.n_users, settings.filters
        )
        found = np.flatnonzero(table[0] == b)
        k = k_of[source]
        kth = float(sims[0, k - 1]) if k <= table.shape[1] and table[0, k - 1] >= 0 else None
        ranks[source] = (
            (None, float("nan"), kth)
            if found.size == 0
            else (int(found[0]) + 1, float(sims[0, found[0]]), kth)
        )
    has = {"quiz": pop.has_quiz, "interest": pop.has_interest}
    detail = []
    for source, (rank, similarity, kth) in ranks.items():
        k = k_of[source]
        if rank is None:
            lacking = [str(u) for u, r in ((user_id, a), (candidate_id, b)) if not has[source][r]]
            detail.append(
                f"{source}: no {source} vector for user {' nor user '.join(lacking)}"
                if lacking
                else f"{source}: not among the eligible candidates"
            )
        elif rank <= k:
            detail.append(f"{source}: exact rank {rank} against k = {k} (would have been found)")
        elif kth is not None and similarity == kth:
            detail.append(
                f"{source}: exact rank {rank} against k = {k}: tied with the k-th at similarity "
                f"{similarity:.4f}, cut by the tie-break (candidate id, lowest first)"
            )
        else:
            detail.append(
                f"{source}: exact rank {rank} against k = {k} (similarity {similarity:.4f}, "
                f"the k-th's {kth if kth is None else round(kth, 4)})"
            )
    result["detail"] = detail
    return result


def _cut_at_top_k(stored: pd.DataFrame, score: float, top_k: int) -> str:
    """Why a generated, eligible candidate is not in the stored top K: its score, or the tie."""
    if len(stored) < top_k:
        return (
            f"generated, but not in the stored list ({len(stored)} rows, top {top_k}): the "
            "list predates the current signals; `matchjobs score-user` recomputes it"
        )
    lowest = float(stored["score"].min())
    if round(lowest, 4) == score:
        last = int(stored["candidate_id"].iloc[-1])  # stored is in the list's order
        return (
            f"cut at the top {top_k} by the tie-break: it scores {score:.4f}, as the lowest "
            f"listed does, and {TIE_BREAK} (the list ends at candidate {last})"
        )
    return f"cut at the top {top_k} by score: {score:.4f} < {lowest:.4f}, the lowest listed"
