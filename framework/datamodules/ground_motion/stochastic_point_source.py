"""Stochastic point-source ground-motion simulation (Boore 2003), the physics of the synthetic CGM-GM catalog.

A Brune ω² source, piecewise geometric spreading, frequency-dependent anelastic attenuation, a κ0 high-frequency
filter and the generic western-North-America rock amplification give the *target* Fourier amplitude spectrum of
acceleration; a time series is windowed white noise (Saragoni–Hart window) whose spectrum is normalised to unit
mean-square amplitude and multiplied by the target, then integrated to velocity in the frequency domain. A P packet
(amplitude 0.25 of the S packet, at the P arrival) and Gaussian background noise complete a record.

Units: magnitude Mw, distances km, stress drop bar, κ s, frequencies Hz. ``acceleration_fas`` returns the Fourier
amplitude of acceleration in m/s (m/s² · s); ``simulate_velocity`` returns velocity in m/s.

The source and path constants follow Boore (2003) and are the defaults of pyrvt's ``SourceTheoryMotion(region="wna")``
(density 2.8 g/cm³, β = 3.5 km/s, radiation 0.55, free surface 2, partition 1/√2, Q = 180 f^0.45, spreading R^-1 to
40 km then R^-0.5), so pyrvt can serve as an independent reference for the target spectrum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "WNA_ROCK_AMPLIFICATION",
    "CrustalModel",
    "acceleration_fas",
    "corner_frequency",
    "generic_rock_amplification",
    "geometric_spreading",
    "saragoni_hart_window",
    "seismic_moment",
    "simulate_velocity",
    "source_duration",
]

# Campbell (2003) generic western-North-America rock (V_S30 ≈ 620 m/s) amplification, (frequency Hz, factor).
WNA_ROCK_AMPLIFICATION: tuple[tuple[float, float], ...] = (
    (0.01, 1.00), (0.09, 1.10), (0.16, 1.18), (0.51, 1.42), (0.84, 1.58), (1.25, 1.74),
    (2.26, 2.06), (3.17, 2.25), (6.05, 2.58), (16.6, 3.13), (61.2, 4.00), (100.0, 4.40),
)


@dataclass(frozen=True)
class CrustalModel:
    """Source-region and path constants (Boore 2003; pyrvt's WNA defaults).

    Attributes:
        density: ρ at the source, g/cm³.
        shear_velocity: β at the source, km/s.
        p_velocity: α used for the P arrival time, km/s.
        q0, q_exponent: Q(f) = q0 · f^q_exponent.
        spreading_crossover_km: geometric spreading R^-1 up to here, R^-0.5 beyond.
        radiation, free_surface, partition: the constant factors of the source spectrum.
        amplification: (frequency, factor) table interpolated linearly in ln f (held constant outside).
    """

    density: float = 2.8
    shear_velocity: float = 3.5
    p_velocity: float = 6.0
    q0: float = 180.0
    q_exponent: float = 0.45
    spreading_crossover_km: float = 40.0
    radiation: float = 0.55
    free_surface: float = 2.0
    partition: float = 1.0 / math.sqrt(2.0)
    amplification: tuple[tuple[float, float], ...] = field(default=WNA_ROCK_AMPLIFICATION)


def seismic_moment(magnitude):
    """Seismic moment in dyne·cm: ``M0 = 10^(1.5 Mw + 16.05)``."""
    return 10.0 ** (1.5 * np.asarray(magnitude, dtype=np.float64) + 16.05)


def corner_frequency(magnitude, stress_drop, shear_velocity: float = 3.5):
    """Brune corner frequency in Hz: ``fc = 4.906e6 · β · (Δσ / M0)^(1/3)`` (β km/s, Δσ bar, M0 dyne·cm)."""
    return 4.906e6 * shear_velocity * (np.asarray(stress_drop, dtype=np.float64) / seismic_moment(magnitude)) ** (1 / 3)


def geometric_spreading(distance_km, crossover_km: float = 40.0):
    """``1/R`` for R ≤ R_x, ``(1/R_x)·(R_x/R)^0.5`` beyond (R in km, reference distance 1 km)."""
    r = np.asarray(distance_km, dtype=np.float64)
    near = 1.0 / r
    far = (1.0 / crossover_km) * np.sqrt(crossover_km / np.maximum(r, 1e-12))
    return np.where(r <= crossover_km, near, far)


def generic_rock_amplification(frequency, table=WNA_ROCK_AMPLIFICATION):
    """The amplification table interpolated linearly in ln f (constant beyond its ends; 1 at f ≤ 0)."""
    f = np.asarray(frequency, dtype=np.float64)
    freqs = np.log([p[0] for p in table])
    amps = np.array([p[1] for p in table])
    safe = np.where(f > 0, f, table[0][0])
    return np.interp(np.log(safe), freqs, amps)


def acceleration_fas(frequency, magnitude, distance_km, *, stress_drop=30.0, kappa=0.06,
                     crust: CrustalModel = CrustalModel()):
    """Target Fourier amplitude spectrum of acceleration, m/s.

    Broadcasts ``frequency`` against the (broadcast) source/path arguments: pass ``frequency[None, :]`` and
    ``magnitude[:, None]`` for a table. ``distance_km`` is the hypocentral distance.
    """
    f = np.asarray(frequency, dtype=np.float64)
    m0 = seismic_moment(magnitude)
    fc = corner_frequency(magnitude, stress_drop, crust.shear_velocity)
    # C in SI: the cgs constants (dyne·cm, g/cm³, km/s, R0 = 1 km) give 1e-20 cm·s -> 1e-22 m·s.
    constant = crust.radiation * crust.free_surface * crust.partition / (
        4 * math.pi * crust.density * crust.shear_velocity**3) * 1e-22
    displacement = constant * m0 / (1.0 + (f / fc) ** 2)
    r = np.asarray(distance_km, dtype=np.float64)
    q = crust.q0 * np.maximum(f, 1e-6) ** crust.q_exponent
    path = geometric_spreading(r, crust.spreading_crossover_km) * np.exp(-math.pi * f * r / (q * crust.shear_velocity))
    site = np.exp(-math.pi * np.asarray(kappa, dtype=np.float64) * f) * generic_rock_amplification(f, crust.amplification)
    return (2 * math.pi * f) ** 2 * displacement * path * site


def source_duration(magnitude, distance_km, stress_drop=30.0, shear_velocity: float = 3.5, minimum: float = 1.0):
    """Ground-motion duration ``max(1/fc + 0.05 R, minimum)`` in seconds (the floor keeps small events' coda)."""
    fc = corner_frequency(magnitude, stress_drop, shear_velocity)
    return np.maximum(1.0 / fc + 0.05 * np.asarray(distance_km, dtype=np.float64), minimum)


def saragoni_hart_window(t, duration, *, epsilon: float = 0.2, eta: float = 0.05, duration_factor: float = 2.0):
    """Saragoni–Hart envelope on times ``t ≥ 0`` (0 before): peak 1 at ``ε·t_η``, ``η`` at ``t_η = factor·duration``."""
    t = np.asarray(t, dtype=np.float64)
    t_eta = duration_factor * duration
    b = -epsilon * math.log(eta) / (1.0 + epsilon * (math.log(epsilon) - 1.0))
    c = b / epsilon
    a = (math.e / epsilon) ** b
    x = np.clip(t / t_eta, 0.0, None)
    with np.errstate(divide="ignore"):
        w = a * np.power(x, b) * np.exp(-c * x)
    return np.where(t > 0, w, 0.0)


def _shaped_packet(rng: np.random.Generator, n_samples: int, dt: float, start: float, duration: float,
                   target_fas: np.ndarray, frequency: np.ndarray) -> np.ndarray:
    """rFFT ``[n//2+1]`` (complex, ×dt units) of velocity: windowed noise with unit mean-square spectrum × target / (i2πf)."""
    t = np.arange(n_samples) * dt - start
    noise = rng.standard_normal(n_samples) * saragoni_hart_window(t, duration)
    spectrum = np.fft.rfft(noise)
    spectrum /= np.sqrt(np.mean(np.abs(spectrum) ** 2))
    velocity = np.zeros_like(spectrum)
    positive = frequency > 0
    velocity[positive] = spectrum[positive] * target_fas[positive] / (2j * math.pi * frequency[positive])
    return velocity


def simulate_velocity(rng: np.random.Generator, *, magnitude: float, distance_km: float, stress_drop: float = 30.0,
                      kappa: float = 0.06, site_amplification: float = 1.0, n_samples: int = 6000, dt: float = 0.01,
                      origin_time: float = 5.0, p_amplitude: float = 0.25, noise_std: float = 1e-8,
                      crust: CrustalModel = CrustalModel()) -> np.ndarray:
    """One velocity record ``[n_samples]`` in m/s (origin at ``origin_time`` s, S at R/β, P at R/α after it).

    ``site_amplification`` multiplies the whole spectrum (a frequency-independent site term); ``kappa`` shapes its
    high frequencies. The acceleration FAS of the S packet equals ``acceleration_fas`` in expectation (mean square).
    """
    frequency = np.fft.rfftfreq(n_samples, dt)
    target = acceleration_fas(frequency, magnitude, distance_km, stress_drop=stress_drop, kappa=kappa, crust=crust)
    target = target * site_amplification / dt  # DFT units: FT ≈ dt · DFT
    duration = float(source_duration(magnitude, distance_km, stress_drop, crust.shear_velocity))
    s_start = origin_time + distance_km / crust.shear_velocity
    p_start = origin_time + distance_km / crust.p_velocity
    spectrum = _shaped_packet(rng, n_samples, dt, s_start, duration, target, frequency)
    if p_amplitude > 0:
        spectrum = spectrum + p_amplitude * _shaped_packet(rng, n_samples, dt, p_start, duration, target, frequency)
    velocity = np.fft.irfft(spectrum, n=n_samples)
    if noise_std > 0:
        velocity = velocity + noise_std * rng.standard_normal(n_samples)
    return velocity
