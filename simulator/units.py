"""The one module that converts units.

Inside fleetsim every quantity is SI: seconds, bytes, FLOP/s, bytes/s, watts, tokens (counts),
tokens/s, requests/s. Data files and reports use human units (GiB, TB/s, TFLOP/s, Gbit/s, ms, kW);
they are converted here and only here. A test greps the rest of the package for scale literals.

The simulation clock is in seconds (``SIM_CLOCK_UNIT``); simpy itself is unitless.
"""

from __future__ import annotations

import math

SIM_CLOCK_UNIT = "s"

# Type aliases for documentation (no runtime wrappers in the hot path).
Seconds = float
Bytes = float
BytesPerSecond = float
FlopsPerSecond = float
Watts = float

KIB: float = 1024.0
MIB: float = 1024.0**2
GIB: float = 1024.0**3
KB: float = 1e3
MB: float = 1e6
GB: float = 1e9
TB: float = 1e12
GBIT: float = 1e9 / 8.0
TFLOPS: float = 1e12
MS: float = 1e-3
US: float = 1e-6
KW: float = 1e3
MILLION: float = 1e6
PERCENT: float = 100.0
SECONDS_PER_HOUR: float = 3600.0
JOULES_PER_KWH: float = 3.6e6


def gib_to_bytes(value_gib: float) -> float:
    """Binary gibibytes to bytes (vendors' HBM "GB" are GiB)."""
    return value_gib * GIB


def gb_to_bytes(value_gb: float) -> float:
    """Decimal gigabytes to bytes."""
    return value_gb * GB


def bytes_to_gib(value_bytes: float) -> float:
    """Bytes to binary gibibytes."""
    return value_bytes / GIB


def bytes_to_gb(value_bytes: float) -> float:
    """Bytes to decimal gigabytes."""
    return value_bytes / GB


def tb_per_s_to_bytes_per_s(value_tb_per_s: float) -> float:
    """Decimal TB/s to bytes/s."""
    return value_tb_per_s * TB


def gb_per_s_to_bytes_per_s(value_gb_per_s: float) -> float:
    """Decimal GB/s to bytes/s."""
    return value_gb_per_s * GB


def bytes_per_s_to_gb_per_s(value_bytes_per_s: float) -> float:
    """Bytes/s to decimal GB/s."""
    return value_bytes_per_s / GB


def gbit_per_s_to_bytes_per_s(value_gbit_per_s: float) -> float:
    """Decimal gigabits/s to bytes/s."""
    return value_gbit_per_s * GBIT


def tflops_to_flops_per_s(value_tflops: float) -> float:
    """TFLOP/s to FLOP/s."""
    return value_tflops * TFLOPS


def flops_per_s_to_tflops(value_flops_per_s: float) -> float:
    """FLOP/s to TFLOP/s."""
    return value_flops_per_s / TFLOPS


def ms_to_s(value_ms: float) -> float:
    """Milliseconds to seconds."""
    return value_ms * MS


def s_to_ms(value_s: float) -> float:
    """Seconds to milliseconds."""
    return value_s / MS


def us_to_s(value_us: float) -> float:
    """Microseconds to seconds."""
    return value_us * US


def s_to_us(value_s: float) -> float:
    """Seconds to microseconds."""
    return value_s / US


def w_to_kw(value_w: float) -> float:
    """Watts to kilowatts."""
    return value_w / KW


def kw_to_w(value_kw: float) -> float:
    """Kilowatts to watts."""
    return value_kw * KW


def frac_to_pct(value_frac: float) -> float:
    """A fraction in [0, 1] to a percentage."""
    return value_frac * PERCENT


def pct_to_frac(value_pct: float) -> float:
    """A percentage to a fraction."""
    return value_pct / PERCENT


def per_hour_to_per_s(value_per_hour: float) -> float:
    """A rate per hour to a rate per second."""
    return value_per_hour / SECONDS_PER_HOUR


def hours_to_s(value_h: float) -> float:
    """Hours to seconds."""
    return value_h * SECONDS_PER_HOUR


def joules_to_kwh(value_j: float) -> float:
    """Joules to kilowatt-hours."""
    return value_j / JOULES_PER_KWH


def per_million(value: float) -> float:
    """Scale a per-unit figure to per-million units (e.g. $ per token -> $ per million tokens)."""
    return value * MILLION


def millions(value: float) -> float:
    """A count to millions, for display."""
    return value / MILLION


def billions(value: float) -> float:
    """A count to billions, for display (e.g. parameter counts)."""
    return value / GB


def billions_to_count(value_b: float) -> float:
    """A count given in billions (e.g. parameters in a data file) to the count."""
    return value_b * GB


def fmt_bytes(value_bytes: float) -> str:
    """Human display of a byte count in GiB (binary), e.g. '35.2 GiB'."""
    return f"{bytes_to_gib(value_bytes):.1f} GiB"


def fmt_duration(value_s: float) -> str:
    """Human display of a duration: ms below one second, else seconds."""
    if not math.isfinite(value_s):
        return "inf"
    if abs(value_s) < 1.0:
        return f"{s_to_ms(value_s):.1f} ms"
    return f"{value_s:.2f} s"
