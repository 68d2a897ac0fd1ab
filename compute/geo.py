"""Great-circle distances and the coarse grid cells used to partition candidate search."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

EARTH_RADIUS_KM = 6371.0088
KM_PER_DEGREE = np.pi * EARTH_RADIUS_KM / 180.0


def haversine_km(
    lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Great-circle distance in km; NaN where any coordinate is NaN.

    ``d = 2 R asin(sqrt(sin²(Δφ/2) + cos φ1 cos φ2 sin²(Δλ/2)))``, R = 6371.0088 km.

    Parameters
    ----------
    lat1, lon1, lat2, lon2 : broadcastable float arrays, degrees

    Returns
    -------
    (broadcast shape) float64
    """
    phi1 = np.radians(np.asarray(lat1, dtype=np.float64))
    phi2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dphi = phi2 - phi1
    dlam = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    h = np.sin(dphi / 2.0) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlam / 2.0) ** 2
    # Rounding can push h a hair above 1 for antipodal points; asin would give NaN.
    distance: npt.NDArray[np.float64] = (
        2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    )
    return distance


def cell_ids(
    lat: npt.NDArray[np.float64], lon: npt.NDArray[np.float64], cell_deg: float
) -> npt.NDArray[np.int64]:
    """Grid cell of each point on a ``cell_deg`` × ``cell_deg`` lat/lon grid; -1 = no location.

    ``cell = floor((lat + 90) / cell_deg) * n_lon + floor((lon + 180) / cell_deg)``.

    Parameters
    ----------
    lat, lon : (n,) float64, degrees (NaN = no location)
    cell_deg : float > 0

    Returns
    -------
    (n,) int64
    """
    if not cell_deg > 0:
        raise ValueError(f"cell_deg must be > 0; got {cell_deg}")
    n_lat, n_lon = _grid_shape(cell_deg)
    located = np.isfinite(lat) & np.isfinite(lon)
    safe_lat = np.where(located, lat, 0.0)
    safe_lon = np.where(located, lon, 0.0)
    i = np.clip(np.floor((safe_lat + 90.0) / cell_deg), 0, n_lat - 1).astype(np.int64)
    j = np.clip(np.floor((safe_lon + 180.0) / cell_deg), 0, n_lon - 1).astype(np.int64)
    return np.where(located, i * n_lon + j, -1)


def _grid_shape(cell_deg: float) -> tuple[int, int]:
    return int(np.ceil(180.0 / cell_deg)), int(np.ceil(360.0 / cell_deg))


def min_distance_to_cell_km(
    lat: npt.NDArray[np.float64],
    lon: npt.NDArray[np.float64],
    cell: int | npt.NDArray[np.int64],
    cell_deg: float,
) -> npt.NDArray[np.float64]:
    """A lower bound of the distance from each point to any point of grid cell ``cell``.

    ``cell`` may be an array broadcastable against ``lat``/``lon`` (e.g. points ``(q, 1)``
    against cells ``(1, P)`` gives every point-to-cell bound in one call).

    The point is clamped into the cell's lat/lon box (longitude with wrap-around) and
    the haversine distance to the clamped point is reduced by the box diameter
    (``√2 · cell_deg · km/°``): the clamped point and the true nearest point both lie
    in the box, so the bound never exceeds the true distance. NaN inputs give 0
    (search everything).

    Parameters
    ----------
    lat, lon : (q,) float64 (or broadcastable with ``cell``)
    cell : int or int64 array, cell ids from :func:`cell_ids` (not -1)
    cell_deg : float

    Returns
    -------
    (broadcast shape) float64, ≥ 0
    """
    _, n_lon = _grid_shape(cell_deg)
    lat0 = (cell // n_lon) * cell_deg - 90.0
    lon0 = (cell % n_lon) * cell_deg - 180.0
    lat1, lon1 = lat0 + cell_deg, lon0 + cell_deg
    clamped_lat = np.clip(lat, lat0, lat1)
    to_west = np.mod(lon0 - lon, 360.0)
    to_east = np.mod(lon - lon1, 360.0)
    inside = (lon >= lon0) & (lon <= lon1)
    clamped_lon = np.where(inside, lon, np.where(to_west <= to_east, lon0, lon1))
    d = haversine_km(lat, lon, clamped_lat, clamped_lon)
    bound = d - np.sqrt(2.0) * cell_deg * KM_PER_DEGREE
    return np.where(np.isfinite(bound), np.maximum(bound, 0.0), 0.0)
