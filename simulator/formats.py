"""Numeric formats: storage bytes per element (scales included) and the tensor-core rate a GEMM runs at.

A deployment has three formats: weights, activations and KV cache. A *named precision* (``fp4``,
``fp8``, ``bf16``, ...) sets all three the way MLPerf submitters ran it; each part can be overridden.

Storage (bytes per element, including block scales):
- bf16/fp16: 2; fp8 (e4m3, per-tensor scale): 1; int8: 1.
- mxfp6 (OCP MX: 6-bit elements, one 8-bit E8M0 scale per 32): 6/8 + 1/32 = 0.78125.
- mxfp4 (OCP MX: 4-bit elements, one 8-bit scale per 32): 4/8 + 1/32 = 0.53125.
- nvfp4 (NVIDIA: 4-bit elements, one FP8 E4M3 scale per 16, plus a per-tensor FP32 scale): 0.5625.
- int4 (weight-only, one bf16 scale per group of 128): 0.5 + 2/128 = 0.515625.

Compute: a GEMM runs at the tensor-core rate of the wider of its weight and activation formats, in
that format's *compute family* (bf16, fp8, fp6, fp4). Where the hardware lacks the family (fp4 on
Hopper or CDNA3), the weights are dequantised and the GEMM runs weight-only-quantised at the next
wider supported rate (fp4 -> fp6 -> fp8 -> bf16). The per-format rates themselves live in the
accelerator profile (fp6 runs at the fp4 rate on AMD CDNA4 and at the fp8 rate on NVIDIA Blackwell).
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.errors import InputError, unknown_name


@dataclass(frozen=True)
class NumericFormat:
    """One storage format: its id, bytes per element (scales included) and compute family."""

    id: str
    bytes_per_element: float
    compute_family: str
    bits: int
    description: str


_BLOCK_SCALE_BITS = 8
_MX_BLOCK = 32
_NVFP4_BLOCK = 16
_INT4_GROUP = 128
_BITS_PER_BYTE = 8

FORMATS: dict[str, NumericFormat] = {
    f.id: f
    for f in (
        NumericFormat("bf16", 2.0, "bf16", 16, "bfloat16"),
        NumericFormat("fp16", 2.0, "bf16", 16, "IEEE half (runs at the bf16 rate)"),
        NumericFormat("fp8", 1.0, "fp8", 8, "FP8 E4M3 with per-tensor scale"),
        NumericFormat("int8", 1.0, "fp8", 8, "INT8 with per-channel scale (runs at the 8-bit rate)"),
        NumericFormat(
            "mxfp6",
            6 / _BITS_PER_BYTE + _BLOCK_SCALE_BITS / _BITS_PER_BYTE / _MX_BLOCK,
            "fp6",
            6,
            "OCP MXFP6, E8M0 scale per 32",
        ),
        NumericFormat(
            "mxfp4",
            4 / _BITS_PER_BYTE + _BLOCK_SCALE_BITS / _BITS_PER_BYTE / _MX_BLOCK,
            "fp4",
            4,
            "OCP MXFP4, E8M0 scale per 32",
        ),
        NumericFormat(
            "nvfp4",
            4 / _BITS_PER_BYTE + _BLOCK_SCALE_BITS / _BITS_PER_BYTE / _NVFP4_BLOCK,
            "fp4",
            4,
            "NVIDIA NVFP4, E4M3 scale per 16",
        ),
        NumericFormat(
            "int4",
            4 / _BITS_PER_BYTE + 16 / _BITS_PER_BYTE / _INT4_GROUP,
            "fp4",
            4,
            "INT4 weight-only, bf16 scale per 128",
        ),
    )
}

# Compute families from narrowest to widest: a missing family falls back to the next wider one.
FAMILY_ORDER: tuple[str, ...] = ("fp4", "fp6", "fp8", "bf16")


@dataclass(frozen=True)
class Precision:
    """Weights, activations and KV-cache formats of one deployment (format ids from ``FORMATS``)."""

    weights: str
    activations: str
    kv_cache: str

    @property
    def weight_bytes_per_param(self) -> float:
        """Bytes per weight element, block scales included."""
        return FORMATS[self.weights].bytes_per_element

    @property
    def kv_bytes_per_element(self) -> float:
        """Bytes per cached K/V element."""
        return FORMATS[self.kv_cache].bytes_per_element

    @property
    def activation_bytes_per_element(self) -> float:
        """Bytes per activation element (what all-reduce and all-to-all move)."""
        return FORMATS[self.activations].bytes_per_element

    def label(self) -> str:
        """Short human label, e.g. 'w=nvfp4 a=nvfp4 kv=fp8'."""
        return f"w={self.weights} a={self.activations} kv={self.kv_cache}"


# Named precisions as MLPerf submitters ran them. "4" means the vendor's block-scaled 4-bit format:
# NVFP4 on NVIDIA Blackwell, MXFP4 on AMD CDNA4 (and MXFP4 weights, weight-only, elsewhere).
NAMED_PRECISIONS: dict[str, tuple[str, str, str]] = {
    "bf16": ("bf16", "bf16", "bf16"),
    "fp16": ("fp16", "fp16", "fp16"),
    "fp8": ("fp8", "fp8", "fp8"),
    "int8": ("int8", "int8", "fp8"),
    "fp6": ("mxfp6", "mxfp6", "fp8"),
    "fp4": ("fp4", "fp4", "fp8"),
    "mxfp4": ("mxfp4", "mxfp4", "fp8"),
    "nvfp4": ("nvfp4", "nvfp4", "fp8"),
    "w4a8": ("fp4", "fp8", "fp8"),
    "w4a16": ("int4", "bf16", "bf16"),
}

_VENDOR_FP4 = {"nvidia": "nvfp4", "amd": "mxfp4"}


def _resolve_format(fmt: str, vendor: str) -> str:
    if fmt == "fp4":
        return _VENDOR_FP4.get(vendor, "mxfp4")
    if fmt not in FORMATS:
        raise unknown_name("numeric format", fmt, [*FORMATS, "fp4"])
    return fmt


def resolve_precision(
    name: str,
    vendor: str,
    *,
    weights: str | None = None,
    activations: str | None = None,
    kv_cache: str | None = None,
) -> Precision:
    """Expand a named precision for a vendor, with optional per-part overrides.

    Raises ``InputError`` on an unknown name or format.
    """
    key = name.lower()
    if key not in NAMED_PRECISIONS:
        raise unknown_name("precision", name, NAMED_PRECISIONS)
    w, a, kv = NAMED_PRECISIONS[key]
    return Precision(
        weights=_resolve_format((weights or w).lower(), vendor),
        activations=_resolve_format((activations or a).lower(), vendor),
        kv_cache=_resolve_format((kv_cache or kv).lower(), vendor),
    )


def gemm_compute_family(precision: Precision, supported_families: tuple[str, ...]) -> str:
    """The tensor-core family a GEMM runs in: the wider of weights and activations, widened further
    until the hardware supports it (weight-only quantisation on hardware without the narrow format).

    Raises ``InputError`` if no family is supported at all.
    """
    wanted = max(
        FAMILY_ORDER.index(FORMATS[precision.weights].compute_family),
        FAMILY_ORDER.index(FORMATS[precision.activations].compute_family),
    )
    for family in FAMILY_ORDER[wanted:]:
        if family in supported_families:
            return family
    raise InputError(
        f"no supported compute format for {precision.label()}; "
        f"hardware supports {', '.join(supported_families)}"
    )
