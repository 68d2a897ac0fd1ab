"""Slow, obviously-correct reference implementations (plain Python loops over pairs).

A test oracle, written apart from compute/ on purpose: it does not use the signal registry
(``compute.signals.SIGNALS``), so a registry or kernel mistake shows up as a disagreement.
A new signal needs its own few lines here (test_signals fails until it has them).
"""

from __future__ import annotations

import math

from compute.population import Population

SIGNALS = (
    "quiz",
    "interest",
    "rating_quality",
    "rating_fit",
    "newness",
    "proximity",
    "appeal",
    "reciprocity",
)


def haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(min(max(h, 0.0), 1.0)))


def distance(pop: Population, a: int, b: int) -> float | None:
    coords = (float(pop.lat[a]), float(pop.lon[a]), float(pop.lat[b]), float(pop.lon[b]))
    if any(math.isnan(c) for c in coords):
        return None
    return haversine(*coords)


def _limit(x: float) -> float:
    return math.inf if math.isnan(x) else x


def first_failing_filter(
    pop: Population,
    a: int,
    b: int,
    *,
    require_active: bool = True,
    enforce_age: bool = True,
    enforce_distance: bool = True,
) -> str | None:
    """Name of the first failing filter (documented order), or None when the pair passes."""
    if a == b:
        return "self"
    if require_active and not (pop.active[a] and pop.active[b]):
        return "inactive"

    def seeks(x: int, y: int) -> bool:
        g = int(pop.gender[y])
        return 0 <= g < 3 and bool((int(pop.seeking_mask[x]) >> g) & 1)

    if not (seeks(a, b) and seeks(b, a)):
        return "gender"

    def age_ok(x: int, y: int) -> bool:
        years = math.floor(float(pop.age[y]))
        return int(pop.age_min[x]) <= years <= int(pop.age_max[x])

    if enforce_age and not (age_ok(a, b) and age_ok(b, a)):
        return "age"
    d = distance(pop, a, b)
    if enforce_distance and d is not None:
        limit = min(_limit(float(pop.max_distance_km[a])), _limit(float(pop.max_distance_km[b])))
        if d > limit:
            return "distance"

    def excludes(x: int, y: int) -> bool:
        lo, hi = int(pop.excluded_indptr[x]), int(pop.excluded_indptr[x + 1])
        return y in {int(r) for r in pop.excluded_rows[lo:hi]}

    if excludes(a, b) or excludes(b, a):
        return "excluded"
    return None


def _cos(u: list[float], v: list[float]) -> float | None:
    nu = math.sqrt(sum(x * x for x in u))
    nv = math.sqrt(sum(x * x for x in v))
    if not (nu > 0 and nv > 0) or math.isnan(nu) or math.isnan(nv):
        return None
    return max(-1.0, min(1.0, sum(x * y for x, y in zip(u, v, strict=True)) / (nu * nv)))


def interests(pop: Population, a: int) -> dict[int, float]:
    lo, hi = int(pop.interest_indptr[a]), int(pop.interest_indptr[a + 1])
    return {
        int(i): float(w)
        for i, w in zip(pop.interest_ids[lo:hi], pop.interest_weights[lo:hi], strict=True)
    }


def shared_interests(pop: Population, a: int, b: int) -> list[int]:
    ia, ib = interests(pop, a), interests(pop, b)
    shared = [(min(ia[i], ib[i]), i) for i in ia.keys() & ib.keys() if min(ia[i], ib[i]) > 0]
    return [i for _, i in sorted(shared, key=lambda t: (-t[0], t[1]))[:3]]


def signals(
    pop: Population, a: int, b: int, half_life: float = 30.0, scale_km: float = 25.0
) -> dict[str, float | None]:
    """The eight signals a → b; None = missing."""
    out: dict[str, float | None] = {}
    cos = _cos(pop.quiz_vectors[a].tolist(), pop.quiz_vectors[b].tolist())
    out["quiz"] = (1 + cos) / 2 if cos is not None and pop.has_quiz[a] and pop.has_quiz[b] else None
    ia, ib = interests(pop, a), interests(pop, b)
    if ia and ib:
        out["interest"] = min(1.0, sum(min(ia[i], ib[i]) for i in ia.keys() & ib.keys()))
    else:
        out["interest"] = None
    q = float(pop.rating_quality[b])
    out["rating_quality"] = (
        min(1.0, max(0.0, q)) if pop.has_rating_quality[b] and not math.isnan(q) else None
    )
    cos = _cos(pop.rating_preferences[a].tolist(), pop.rating_dims[b].tolist())
    out["rating_fit"] = (
        min(1.0, max(0.0, 0.5 + 0.5 * cos)) if cos is not None and pop.has_preference[a] else None
    )
    days = float(pop.account_age_days[b])
    out["newness"] = None if math.isnan(days) else 0.5 ** (max(days, 0.0) / half_life)
    d = distance(pop, a, b)
    out["proximity"] = None if d is None else math.exp(-d / scale_km)
    out["appeal"] = _decision(pop, taste=a, appeal=b)
    out["reciprocity"] = _decision(pop, taste=b, appeal=a)
    return out


def _decision(pop: Population, taste: int, appeal: int) -> float | None:
    """(1 + clip(taste · appeal, -1, 1)) / 2 when both vectors exist."""
    if not (pop.has_taste[taste] and pop.has_appeal[appeal]):
        return None
    dot = sum(
        float(x) * float(y)
        for x, y in zip(pop.taste_vectors[taste], pop.appeal_vectors[appeal], strict=True)
    )
    if not math.isfinite(dot):
        return None
    return (1 + min(1.0, max(-1.0, dot))) / 2


def directional_score(
    pop: Population, a: int, b: int, weights: dict[str, float], neutral: float = 0.5
) -> float:
    total = sum(weights.values())
    sig = signals(pop, a, b)
    return (
        sum(weights[name] * (neutral if sig[name] is None else sig[name]) for name in SIGNALS)
        / total
    )


def score(
    pop: Population,
    a: int,
    b: int,
    weights: dict[str, float],
    *,
    neutral: float = 0.5,
    reciprocal: bool = True,
    fusion: str = "harmonic",
    dormancy: tuple[float, float] | None = None,
    calibration: tuple[float, float, float, float] | None = None,
) -> float:
    """Final score of pair (a, b); ``dormancy`` = (grace_days, half_life_days) or None;
    ``calibration`` = (intercept, scale, viewer_rate, default_rate) for the ``calibrated*``
    fusions, which read each direction as a like probability (fusion off: P(a likes b))."""
    s_ab = directional_score(pop, a, b, weights, neutral)

    def p_like(viewer: int, directional: float) -> float:
        assert calibration is not None
        intercept, scale, viewer_rate, default_rate = calibration
        known = pop.has_like_rate is not None and bool(pop.has_like_rate[viewer])
        rate = float(pop.like_rate_given[viewer]) if known else default_rate
        z = intercept + scale * directional + viewer_rate * rate
        return 1.0 / (1.0 + math.exp(-z))

    calibrated = fusion.startswith("calibrated")
    s = p_like(a, s_ab) if calibrated else s_ab
    if reciprocal:
        s_ba = directional_score(pop, b, a, weights, neutral)
        x, y = (p_like(a, s_ab), p_like(b, s_ba)) if calibrated else (s_ab, s_ba)
        plain = {
            "calibrated": "geometric",
            "calibrated_harmonic": "harmonic",
            "calibrated_min": "min",
        }.get(fusion, fusion)
        if plain == "harmonic":
            s = 0.0 if x + y == 0 else 2 * x * y / (x + y)
        elif plain == "geometric":
            s = math.sqrt(x * y)
        else:
            s = min(x, y)
    if dormancy is not None:
        grace, half_life = dormancy
        days = float(pop.inactive_days[b])
        if not math.isnan(days):
            s *= 0.5 ** (max(days - grace, 0.0) / half_life)
    return min(1.0, max(0.0, s))


def exact_neighbours(pop: Population, a: int, source: str, k: int) -> list[int]:
    """Top-k eligible candidates of row a by cosine of one vector source (loops)."""
    vectors = pop.quiz_vectors if source == "quiz" else pop.interest_vectors
    has = pop.has_quiz if source == "quiz" else pop.has_interest
    if not has[a]:
        return []
    scored = []
    for b in range(pop.n_users):
        if not has[b] or first_failing_filter(pop, a, b) is not None:
            continue
        cos = _cos(vectors[a].tolist(), vectors[b].tolist())
        if cos is not None:
            scored.append((-cos, int(pop.user_ids[b]), b))
    return [b for _, _, b in sorted(scored)[:k]]
