"""gpu_check's encoder rows: the embed job's MiniLM and EfficientNet-Lite0 in float32
on the device vs float64 on the CPU, their throughput, and the weights folder made
here for a machine without the weight packages (`--make-assets`)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmarks.gpu_rows import CPU, F64, Row, compare, timed

# --- 6. corpus encoders -------------------------------------------------------------

ASSET_MINILM, ASSET_EFFNET = "minilm", "efficientnet-lite0.pt"
SAMPLE_TEXTS = [
    "Sushi and sake are served at a formal dinner in Kyoto.",
    "Flamenco dancing and the Spanish guitar.",
    "La baguette et le fromage se partagent au marché du dimanche.",
    "El tango nació en los barrios del puerto de Buenos Aires a fines del siglo XIX.",
    "Der Kölner Dom ist eine römisch-katholische Kirche im gotischen Baustil.",
    "A raga is a melodic framework for improvisation in Indian classical music. " * 12,
    "Nowruz", "The Great Wall stretches along the northern frontier.",
    # past 256 tokens: read in windows pooled over all their tokens (MiniLMEncoder.windows)
    "The Silk Road carried silk, spices and ideas between China and the Mediterranean. " * 30,
]


def make_assets(out: Path) -> Path:
    """The encoders' weights as the device machine needs them (it has no project
    packages, and at most 64 MiB travel): MiniLM's folder and EfficientNet-Lite0's
    state in float16 (44 + 9 MB; both sides of each check load the same rounded
    weights, so the check compares code paths, not weights), plus the
    efficientnet_lite_pytorch source. Run here; carry the folder."""
    import shutil

    import efficientnet_lite_pytorch
    from safetensors.torch import load_file, save_file

    from culturesim_ray.encoders.image import efficientnet_weights_path
    from culturesim_ray.encoders.text import minilm_path

    out.mkdir(parents=True, exist_ok=True)
    src = Path(minilm_path())
    dst = out / ASSET_MINILM
    shutil.copytree(src, dst, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx", "README*"))
    weights = load_file(str(src / "model.safetensors"))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
              str(dst / "model.safetensors"), metadata={"format": "pt"})
    state = torch.load(efficientnet_weights_path(), map_location="cpu", weights_only=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()},
               out / ASSET_EFFNET)
    pkg = Path(efficientnet_lite_pytorch.__file__).parent
    shutil.copytree(pkg, out / pkg.name, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return out


def sample_images(n: int, gen: torch.Generator) -> list[bytes]:
    """PNG files of several sizes and aspect ratios: smooth colour fields plus noise."""
    import io

    from PIL import Image

    out = []
    for i in range(n):
        h, w = [(224, 224), (300, 200), (160, 400), (512, 384)][i % 4]
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        base = torch.stack([xx, yy, (xx + yy) / 2]) * torch.rand(3, 1, 1, generator=gen)
        img = (base + 0.2 * torch.rand(3, h, w, generator=gen)).clamp(0, 1)
        buf = io.BytesIO()
        Image.fromarray((img.permute(1, 2, 0) * 255).to(torch.uint8).numpy()).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def check_encoders(device: torch.device, quick: bool, assets: Path | None,
                   ) -> tuple[list[Row], dict[str, Any]]:
    """The embed job's text (MiniLM) and image (EfficientNet-Lite0) encoders in float32
    on the device vs the same weights in float64 on the CPU; cuDNN TF32 (its default
    for convolutions) off for the strict rows, on for a looser one. Throughput."""
    import numpy as np

    if assets is not None and str(assets) not in sys.path:
        sys.path.insert(0, str(assets))  # the carried efficientnet_lite_pytorch
    from culturesim_ray.encoders.image import EfficientNetEncoder, load_image
    from culturesim_ray.encoders.text import MiniLMEncoder

    text_path = str(assets / ASSET_MINILM) if assets else None
    image_path = str(assets / ASSET_EFFNET) if assets else None
    gen = torch.Generator().manual_seed(9)
    texts = SAMPLE_TEXTS if quick else SAMPLE_TEXTS * 4
    images = sample_images(6 if quick else 16, gen)
    rows: list[Row] = []
    perf: dict[str, Any] = {}

    ref_text = MiniLMEncoder("cpu", text_model=text_path)
    ref_text.model = ref_text.model.double()  # encode() pools in the model's float64
    want = torch.from_numpy(ref_text.encode(texts).vectors)
    enc = MiniLMEncoder(str(device), text_model=text_path)
    got = torch.from_numpy(enc.encode(texts).vectors)
    rows.append(compare("enc.minilm", got, want, 1e-4, info=f"{len(texts)} texts"))
    t = timed(lambda: enc.encode(texts * 8), device)
    perf["minilm_texts_per_s"] = 8 * len(texts) / t
    rows.append(Row("enc.minilm_throughput", None, None, None, True,
                    f"{perf['minilm_texts_per_s']:.0f} texts/s (passes of <= {enc.tokens_per_pass} tokens)"))

    img = EfficientNetEncoder(str(device), weights_path=image_path)
    ref_model = copy.deepcopy(img.model).to(CPU, F64)
    x = torch.from_numpy(np.stack([load_image(b) for b in images])).permute(0, 3, 1, 2)
    with torch.no_grad():
        want = torch.nn.functional.normalize(ref_model.extract_features(x.to(F64)).mean(dim=(2, 3)),
                                             dim=-1)

    def encode(tf32: bool) -> Tensor:
        saved = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = tf32
        try:
            res = img.encode_bytes(images)
        finally:
            torch.backends.cudnn.allow_tf32 = saved
        if any(res.errors):
            raise RuntimeError(f"image errors: {res.errors}")
        return torch.from_numpy(res.vectors)

    variants = [("enc.efficientnet", False, 1e-4)]
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:  # what the job runs
        variants.append(("enc.efficientnet_tf32", True, 1e-2))
    for name, tf32, tol in variants:
        rows.append(compare(name, encode(tf32), want, tol, info=f"{len(images)} images"))
    many = images * (8 if device.type == "cuda" else 1)
    t = timed(lambda: img.encode_bytes(many), device)
    perf["efficientnet_images_per_s"] = len(many) / t
    threads, img.decode_threads = img.decode_threads, 1
    perf["efficientnet_images_per_s_1thread"] = len(many) / timed(lambda: img.encode_bytes(many),
                                                                  device)
    rows.append(Row("enc.efficientnet_throughput", None, None, None, True,
                    f"{perf['efficientnet_images_per_s']:.0f} images/s decoding in {threads} "
                    f"threads, {perf['efficientnet_images_per_s_1thread']:.0f} in 1"))
    return rows, perf
