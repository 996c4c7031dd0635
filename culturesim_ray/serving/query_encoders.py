"""Stage 1 of the online answer (`serving.predictor`): the query -> a base
embedding, with the encoder its modality was embedded with in the run (the same
space as the corpus items). Pure: no ray."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from culturesim_ray import runs
from culturesim_ray.encoders import build_encoder, registry
from culturesim_ray.encoders.base import EncodeResult
from culturesim_ray.encoders.coverage import query_note
from culturesim_ray.serving.errors import QueryError

MODALITY_FIELDS = {"text": "text", "image": "image", "sequence": "sequence"}


class QueryEncoders:
    """Per modality, the encoder the embed run used; built on first use. precision:
    the query encoders' dtype where they offer one ("auto": bfloat16 on hardware that
    computes it natively; the corpus was embedded in float32, and a bf16 query
    vector keeps cosine >= 0.996 with the float32 one)."""

    def __init__(self, embed_dir: str, device: str = "cpu",
                 modalities: Sequence[str] | None = None, precision: str = "auto") -> None:
        self.embed_dir, self.device, self.precision = embed_dir, device, precision
        manifest = runs.embed_manifest(embed_dir)
        self.modalities = sorted(modalities or manifest.get("encoders", {}))
        self._encoders: dict[str, Any] = {}
        self._coverage: tuple[Any, str | None] | None = None  # (check or None, its note)

    def encoder(self, modality: str) -> Any:
        if modality not in self.modalities:
            raise QueryError(MODALITY_FIELDS.get(modality, "modality"),
                             f"this service has no {modality} encoder "
                             f"(modalities: {', '.join(self.modalities)})", 422)
        if modality not in self._encoders:
            name, kwargs = runs.run_encoder_kwargs(self.embed_dir, modality)
            if registry.get(name).precision:
                kwargs["precision"] = self.precision
            self._encoders[modality] = build_encoder(name, device=self.device, **kwargs)
        return self._encoders[modality]

    def encode(self, modality: str, payloads: Sequence[Any],
               sequence_format: str = "abc") -> EncodeResult:
        """text: strings; image: file bytes; sequence: file contents in `sequence_format`."""
        enc = self.encoder(modality)
        if modality == "image":
            return enc.encode_bytes(list(payloads), names=["(the request)"] * len(payloads))
        if modality == "sequence":
            return enc.encode_sources(list(payloads), sequence_format)
        return enc.encode(list(payloads))

    def notes(self, modality: str, payloads: Sequence[Any]) -> list[str | None]:
        """Per text payload: a note when the run's text encoder cannot read it (its
        vocabulary check, `encoders.coverage`), else None; None for other modalities
        and for encoders without a check."""
        if modality != "text" or modality not in self.modalities:
            return [None] * len(payloads)
        if self._coverage is None:
            name, kwargs = runs.run_encoder_kwargs(self.embed_dir, modality)
            check = registry.coverage_check(name)
            self._coverage = ((functools.partial(check, **kwargs),
                               query_note(name, registry.any_script_text_encoders()))
                              if check is not None else (None, None))
        poorly_covered, note = self._coverage
        if poorly_covered is None:
            return [None] * len(payloads)
        return [note if poor else None for poor in poorly_covered([str(p) for p in payloads])]
