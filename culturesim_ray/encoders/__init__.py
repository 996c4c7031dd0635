"""Encoders: raw items -> fixed-size vectors. Pure torch/numpy, no ray.

Every encoder has `name`, `modality`, `dim`, `normalized` and
`encode(inputs) -> (vectors (n, dim) float32, errors)`, where `errors[i]` is
None for an encoded item and a reason for one that could not be read (its
vector row is then all NaN and must not be used).
"""

from culturesim_ray.encoders.base import (
    PRECISIONS,
    Encoder,
    EncodeResult,
    pick_device,
    resolve_precision,
)
from culturesim_ray.encoders.registry import REGISTRY, EncoderSpec, build_encoder

__all__ = ["PRECISIONS", "REGISTRY", "EncodeResult", "Encoder", "EncoderSpec", "build_encoder",
           "pick_device", "resolve_precision"]
