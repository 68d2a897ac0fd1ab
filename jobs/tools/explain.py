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

from compute import candidates, filters, scoring, signals
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
    "excluded": "{viewer} already liked, passed or blocked {other}",
}


def explain_pair(
    engine: sa.Engine, config: Config, user_id: int, candidate_id: int, now: dt.datetime
) -> dict[str, Any]:
    settings = match.settings_from_config(config)
    with engine.connect() as conn:
        pop, _, _ = match.load_clean(conn, now, settings)
        users = signal_store.read(conn, schema.users, "id", np.array([user_id, candidate_id]))
        stored = scores.read_rows(conn, settings.version, np.array([user_id]))
    result: dict[str, Any] = {
        "user_id": user_id,
        "candidate_id": candidate_id,
        "algorithm_version": settings.version,
        "config_hash": settings.config_hash,
    }
    row = stored[stored["candidate_id"] == candidate_id]
    result["stored"] = (
        None
        if row.empty
        else {
            "score": float(row["score"].iloc[0]),
            "rank": int((stored["score"] > row["score"].iloc[0]).sum()) + 1,
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

    failing = []
    for check in filters.directional_checks(pop, a, b):
        for ok, viewer, other in (
            (check.a_accepts_b, user_id, candidate_id),
            (check.b_accepts_a, candidate_id, user_id),
        ):
            if not ok:
                failing.append(
                    {
                        "filter": check.name,
                        "direction": f"{viewer} -> {other}",
                        "text": DIRECTION_WORDS[check.name].format(
                            viewer=f"user {viewer}", other=f"user {other}", who=f"user {other}"
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
    result["reverse_score"] = round(float(scored.reverse_score[0]), 4)
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
        result["detail"] = [f"generated, but ranked below the top {settings.scoring.top_k}"]
        return result
    result["verdict"] = "not_generated"
    k_of = {"quiz": settings.candidates.k_quiz, "interest": settings.candidates.k_interest}
    ranks = {}
    for source in candidates.VECTOR_SOURCES:
        table, _ = candidates.exact_candidates(
            pop, np.array([a]), source, pop.n_users, settings.filters
        )
        found = np.flatnonzero(table[0] == b)
        ranks[source] = None if found.size == 0 else int(found[0]) + 1
    result["detail"] = [
        f"{source}: "
        + (
            "no vector on one side"
            if rank is None
            else f"exact rank {rank} against k = {k_of[source]}"
            + (" (would have been found)" if rank <= k_of[source] else "")
        )
        for source, rank in ranks.items()
    ]
    return result
