"""A synthetic San Francisco Bay Area catalog of stochastic point-source records, with spatial structure.

Events are sampled in the SFBA ranges of the CGM-GM data (source latitude 36.79–38.56, longitude −123.00 to
−121.39, depth 2–18 km), with Gutenberg–Richter magnitudes (b = 1) on [2, 3.99]; stations are a fixed set of
coordinates in the station box (latitude 37.26–38.25, longitude −122.62 to −121.64). Each event is recorded by the
stations within ``max_distance_km`` epicentral distance (up to ``records_per_event`` of them).

Coordinates matter (a non-ergodic world, as in the real data): three smooth random fields, fixed by the seed,
give a site term (ln σ ≈ 0.3 plus a west-high / east-low trend of ±0.25), the station κ0 (ln σ 0.2 around
0.06 s) and a source-region stress-drop term (ln σ 0.3); each event also draws its own lognormal stress drop
(σ_ln = 0.5, median 30 bar). Records are 60 s at 100 Hz (6,000 samples), velocity in m/s.

Everything is a deterministic function of ``seed``: record ``i`` draws its noise from ``default_rng([seed, 1, i])``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from framework.datamodules.ground_motion.stochastic_point_source import CrustalModel, simulate_velocity
from framework.progress import progress_lines

__all__ = [
    "SFBA_SOURCE_BOX",
    "SFBA_STATION_BOX",
    "SmoothRandomField",
    "SyntheticWorld",
    "epicentral_distance_km",
    "generate_synthetic_catalog",
]

# (lat_min, lat_max, lon_min, lon_max): the ranges of the CGM-GM SFBA data (research note §2.1).
SFBA_SOURCE_BOX = (36.7865, 38.5575, -123.00267, -121.388)
SFBA_STATION_BOX = (37.25898, 38.24731, -122.61573, -121.6413)
_REFERENCE_LAT, _REFERENCE_LON = 37.7, -122.2
_KM_PER_DEGREE = 111.195


def _to_km(lat, lon):
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    x = (lon - _REFERENCE_LON) * _KM_PER_DEGREE * math.cos(math.radians(_REFERENCE_LAT))
    y = (lat - _REFERENCE_LAT) * _KM_PER_DEGREE
    return x, y


def epicentral_distance_km(lat1, lon1, lat2, lon2):
    """Flat-earth (equirectangular at 37.7° N) epicentral distance in km; broadcasts."""
    x1, y1 = _to_km(lat1, lon1)
    x2, y2 = _to_km(lat2, lon2)
    return np.hypot(x1 - x2, y1 - y2)


class SmoothRandomField:
    """A stationary Gaussian random field with a squared-exponential covariance (random Fourier features).

    ``f(lat, lon) = std · sqrt(2/K) · Σ_k cos(w_k · x + φ_k)`` with ``w_k ~ N(0, I/ℓ²)``, x in km: zero mean,
    variance ``std²`` over realisations, correlation length ``ℓ``; deterministic under ``seed``.
    """

    def __init__(self, *, seed: int, std: float, correlation_km: float, num_features: int = 64) -> None:
        rng = np.random.default_rng(seed)
        self.std = std
        self.weights = rng.standard_normal((num_features, 2)) / correlation_km
        self.phases = rng.uniform(0, 2 * math.pi, num_features)

    def __call__(self, lat, lon):
        x, y = _to_km(lat, lon)
        arg = np.multiply.outer(x, self.weights[:, 0]) + np.multiply.outer(y, self.weights[:, 1]) + self.phases
        return self.std * math.sqrt(2.0 / len(self.phases)) * np.cos(arg).sum(-1)


@dataclass
class SyntheticWorld:
    """The fixed spatial structure of one synthetic catalog (stations and fields), built from ``seed``."""

    seed: int
    num_stations: int = 100
    site_std: float = 0.3
    site_trend: float = 0.25
    kappa_median: float = 0.06
    kappa_std: float = 0.2
    stress_drop_median: float = 30.0
    stress_field_std: float = 0.3
    stress_event_std: float = 0.5

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, 0])
        lat0, lat1, lon0, lon1 = SFBA_STATION_BOX
        self.station_lat = rng.uniform(lat0, lat1, self.num_stations)
        self.station_lon = rng.uniform(lon0, lon1, self.num_stations)
        self.site_field = SmoothRandomField(seed=self.seed * 7 + 1, std=self.site_std, correlation_km=15.0)
        self.kappa_field = SmoothRandomField(seed=self.seed * 7 + 2, std=self.kappa_std, correlation_km=25.0)
        self.stress_field = SmoothRandomField(seed=self.seed * 7 + 3, std=self.stress_field_std, correlation_km=30.0)

    def ln_site_term(self, lat, lon):
        """ln site amplification: smooth field + linear trend, +trend at the west edge, −trend at the east edge."""
        lon0, lon1 = SFBA_STATION_BOX[2], SFBA_STATION_BOX[3]
        trend = self.site_trend * (1.0 - 2.0 * (np.asarray(lon) - lon0) / (lon1 - lon0))
        return self.site_field(lat, lon) + trend

    def kappa(self, lat, lon):
        return self.kappa_median * np.exp(self.kappa_field(lat, lon))

    def median_stress_drop(self, lat, lon):
        """Stress drop (bar) of the source region, before the per-event lognormal draw."""
        return self.stress_drop_median * np.exp(self.stress_field(lat, lon))


def _gutenberg_richter(rng: np.random.Generator, size: int, low: float, high: float, b: float = 1.0) -> np.ndarray:
    # Inverse CDF of the doubly truncated exponential in magnitude.
    beta = b * math.log(10)
    u = rng.uniform(size=size)
    return low - np.log(1 - u * (1 - math.exp(-beta * (high - low)))) / beta


def generate_synthetic_catalog(*, num_records: int, seed: int, num_stations: int = 100, records_per_event: int = 10,
                               max_distance_km: float = 80.0, magnitude_range: tuple[float, float] = (2.0, 3.99),
                               depth_range: tuple[float, float] = (2.0, 18.0), n_samples: int = 6000,
                               dt: float = 0.01) -> dict[str, np.ndarray]:
    """Columns of a catalog of ``num_records`` records (first dim N):

    ``waveform [N, n_samples] float32`` (velocity, m/s), ``magnitude``, ``source_latitude``, ``source_longitude``,
    ``station_latitude``, ``station_longitude``, ``depth`` (km), ``rupture_distance`` (hypocentral, km),
    ``epicentral_distance`` (km), ``stress_drop`` (bar), ``kappa`` (s), ``ln_site_term``, ``event_id``, ``station_id``.
    """
    world = SyntheticWorld(seed=seed, num_stations=num_stations)
    rng = np.random.default_rng([seed, 2])
    crust = CrustalModel()
    rows: dict[str, list] = {k: [] for k in (
        "magnitude", "source_latitude", "source_longitude", "station_latitude", "station_longitude", "depth",
        "rupture_distance", "epicentral_distance", "stress_drop", "kappa", "ln_site_term", "event_id", "station_id")}
    event = 0
    count = 0
    while count < num_records:
        lat = rng.uniform(SFBA_SOURCE_BOX[0], SFBA_SOURCE_BOX[1])
        lon = rng.uniform(SFBA_SOURCE_BOX[2], SFBA_SOURCE_BOX[3])
        epi = epicentral_distance_km(lat, lon, world.station_lat, world.station_lon)
        candidates = np.flatnonzero(epi <= max_distance_km)
        if len(candidates) == 0:
            continue
        magnitude = float(_gutenberg_richter(rng, 1, *magnitude_range)[0])
        depth = rng.uniform(*depth_range)
        stress = float(world.median_stress_drop(lat, lon) * math.exp(world.stress_event_std * rng.standard_normal()))
        take = rng.choice(candidates, size=min(records_per_event, len(candidates), num_records - count), replace=False)
        for station in np.sort(take):
            rows["magnitude"].append(magnitude)
            rows["source_latitude"].append(lat)
            rows["source_longitude"].append(lon)
            rows["station_latitude"].append(world.station_lat[station])
            rows["station_longitude"].append(world.station_lon[station])
            rows["depth"].append(depth)
            rows["epicentral_distance"].append(epi[station])
            rows["rupture_distance"].append(math.hypot(epi[station], depth))
            rows["stress_drop"].append(stress)
            rows["kappa"].append(float(world.kappa(world.station_lat[station], world.station_lon[station])))
            rows["ln_site_term"].append(float(world.ln_site_term(world.station_lat[station],
                                                                 world.station_lon[station])))
            rows["event_id"].append(event)
            rows["station_id"].append(int(station))
        count += len(take)
        event += 1
    columns = {k: np.asarray(v, dtype=np.int64 if k.endswith("_id") else np.float64) for k, v in rows.items()}
    waveforms = np.empty((num_records, n_samples), dtype=np.float32)
    # ~10 ms a record on one core: a 5,000-record catalog takes about a minute, so say how far it got.
    for i in progress_lines(range(num_records), total=num_records, description="synthetic ground-motion records"):
        waveforms[i] = simulate_velocity(
            np.random.default_rng([seed, 1, i]), magnitude=columns["magnitude"][i],
            distance_km=columns["rupture_distance"][i], stress_drop=columns["stress_drop"][i],
            kappa=columns["kappa"][i], site_amplification=math.exp(columns["ln_site_term"][i]), n_samples=n_samples,
            dt=dt, crust=crust)
    columns["waveform"] = waveforms
    return columns
