"""Cross-modal queries over an aligned run (pure: no ray): a text query ranks
cultures by their images, an image query by their texts, when the embed run put
both in one space (`culturesim align`, then `embed --image-align DIR`). The query
vector then fills the other modality's raw slot of the general embedding
(`models.culturesim.query_general`) and meets the cultures' view of that slot
(`retrieval.modality_view`): the smallest change to the same-modality path."""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from culturesim_ray import runs
from culturesim_ray.encoders.align import shares_text_space
from culturesim_ray.serving.errors import QueryError


def cross_modal_target(encoders: Any, modality: str, slots: Container[str]) -> str:
    """The modality a `modality` query is compared with (text -> image, image ->
    text) by `predictor.QueryEncoders` `encoders`; a QueryError (422) unless the run's
    image vectors were aligned to its text encoder and the model has both raw slots."""
    if modality not in ("text", "image") or not {"text", "image"} <= set(encoders.modalities):
        raise QueryError("cross_modal", "a cross-modal query is text -> image or image -> "
                         f"text, in a run with both (modalities: "
                         f"{', '.join(encoders.modalities)})", 422)
    _, image_kwargs = runs.run_encoder_kwargs(encoders.embed_dir, "image")
    text_name, text_kwargs = runs.run_encoder_kwargs(encoders.embed_dir, "text")
    align = image_kwargs.get("image_align")
    if not align or not shares_text_space(align, text_name, text_kwargs.get("text_model")):
        raise QueryError("cross_modal", "this run's image and text vectors do not share a "
                         "space (embed with --image-align DIR, written by culturesim align)", 422)
    target = "image" if modality == "text" else "text"
    if target not in slots:
        raise QueryError("cross_modal", "the model has no raw residual to compare modalities "
                         "in (train with raw_weight > 0)", 422)
    return target
