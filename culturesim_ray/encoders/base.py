"""The encoder interface and helpers every encoder shares (`registry` builds one by name)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np


class EncodeResult(NamedTuple):
    vectors: np.ndarray  # (n, dim) float32; NaN rows where errors[i] is not None
    errors: list[str | None]


class Encoder(Protocol):
    name: str
    modality: str
    dim: int
    normalized: bool

    def encode(self, inputs: Sequence[str]) -> EncodeResult: ...


def pick_device(use_gpu: bool = True) -> str:
    """'cuda' when asked for and present, else 'cpu'. Call once, at an entry point."""
    import torch

    return "cuda" if use_gpu and torch.cuda.is_available() else "cpu"


PRECISIONS = ("float32", "bfloat16", "auto")


def resolve_precision(precision: str, device: str) -> str:
    """The dtype a model runs in: "float32", "bfloat16", or "auto" = bfloat16 where
    the hardware computes it natively (CUDA with bf16; a CPU with AVX512-BF16 or
    AMX), else float32. Emulated bf16 would be slower than float32, not faster."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if str(device).startswith("cuda"):
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return "bfloat16" if native else "float32"
    native = any(getattr(torch.cpu, f, lambda: False)()
                 for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return "bfloat16" if native else "float32"


def read_uri(uri: str, storage_options: dict | None = None) -> bytes:
    """Bytes of a local path or s3:// object.

    FileNotFoundError passes through (the item's own fault: quarantine it);
    any other failure (an unreachable endpoint, refused credentials) becomes
    an OSError naming the uri, meant to fail the job rather than the row."""
    import fsspec

    opts = (storage_options or {}) if uri.startswith("s3://") else {}
    try:
        with fsspec.open(uri, "rb", **opts) as fh:
            return fh.read()
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise OSError(f"reading {uri}: {type(exc).__name__}: {exc}") from exc


def encode_uris(encoder: Any, uris: Sequence[str], storage_options: dict | None,
                what: str) -> EncodeResult:
    """`encoder.encode_bytes` over the files at `uris`: a missing file is that item's
    error ("uri: cannot read <what><uri>: ..."); any other read failure (an outage)
    raises from `read_uri` and fails the job, so no good row is mislabelled."""
    uris = list(uris)
    datas: list[bytes | None] = []
    errors: list[str | None] = [None] * len(uris)
    for i, uri in enumerate(uris):
        try:
            datas.append(read_uri(uri, storage_options))
        except FileNotFoundError as exc:
            errors[i] = f"uri: cannot read {what}{uri}: {type(exc).__name__}: {exc}"
            datas.append(None)
    result = encoder.encode_bytes(datas, names=uris)
    return EncodeResult(result.vectors, [e or r for e, r in zip(errors, result.errors,
                                                                  strict=True)])


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
