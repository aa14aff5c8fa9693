"""Generate the deterministic demo image folder that `make run` uses by default.

Two visually different classes in the Kaggle "Hot Dog - Not Hot Dog" layout
(`train/<class>/`, `test/<class>/`), with varying sizes, aspect ratios and formats
(JPEG, PNG, BMP, GIF), plus two deliberately broken files so the ingest report has
something to show. "hot_dog" images are warm: a sausage in a bun on a light plate;
"not_hot_dog" images are cool: round greens and blues. The same seed gives the same
pixels; the files are written only when missing.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASS_NAMES = ("hot_dog", "not_hot_dog")
SIZES = ((320, 240), (240, 320), (512, 512), (300, 400), (128, 96), (640, 480), (200, 200))
FORMATS = (("jpeg", "jpg", 70), ("png", "png", 15), ("bmp", "bmp", 10), ("gif", "gif", 5))
BROKEN_FILES = {  # relative path -> content
    "train/hot_dog/truncated.jpg": None,  # filled with the first half of a real JPEG
    "train/not_hot_dog/notes.txt": b"not an image: a text file in a class folder\n",
}
_MARKER = ".demo_dataset.json"


def _hot_dog(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
    cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
    length, thick = rng.uniform(0.5, 0.8) * w, rng.uniform(0.12, 0.2) * h
    bun = tuple(int(c) for c in rng.integers([200, 150, 70], [235, 185, 110]))
    sausage = tuple(int(c) for c in rng.integers([150, 40, 20], [200, 70, 45]))
    draw.rounded_rectangle(
        [cx - length / 2, cy - thick, cx + length / 2, cy + thick], radius=thick, fill=bun
    )
    draw.rounded_rectangle(
        [cx - length * 0.55, cy - thick * 0.45, cx + length * 0.55, cy + thick * 0.45],
        radius=thick * 0.45,
        fill=sausage,
    )
    mustard = (230, 200, 30)
    xs = np.linspace(cx - length * 0.45, cx + length * 0.45, 9)
    ys = cy + np.where(np.arange(9) % 2 == 0, -1, 1) * thick * 0.2
    draw.line(
        list(zip(xs.tolist(), ys.tolist(), strict=False)),
        fill=mustard,
        width=max(2, int(thick * 0.15)),
    )


def _not_hot_dog(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
    for _ in range(int(rng.integers(3, 9))):
        r = rng.uniform(0.08, 0.25) * min(w, h)
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        color = tuple(int(c) for c in rng.integers([20, 90, 60], [90, 200, 220]))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color)


def demo_image(class_name: str, index: int, seed: int) -> Image.Image:
    rng = np.random.default_rng([seed, CLASS_NAMES.index(class_name), index])
    w, h = SIZES[int(rng.integers(len(SIZES)))]
    if class_name == "hot_dog":
        background = rng.integers([200, 180, 150], [255, 235, 210])
    else:
        background = rng.integers([60, 110, 120], [140, 190, 210])
    noise = rng.normal(0, 12, size=(h, w, 3))
    pixels = np.clip(background[None, None, :] + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    (_hot_dog if class_name == "hot_dog" else _not_hot_dog)(draw, rng, w, h)
    return image.filter(ImageFilter.GaussianBlur(0.8))


def _format_for(index: int) -> tuple[str, str]:
    slot = (index * 37) % 100  # spread formats evenly over indices
    for pil_format, extension, share in FORMATS:
        if slot < share:
            return pil_format, extension
        slot -= share
    raise AssertionError("format shares must sum to 100")


def generate_demo_images(
    output_dir: str, images_per_class: int = 100, test_fraction: float = 0.2, seed: int = 0
) -> str:
    """Write the demo folder (idempotent) and return its path."""
    params = {
        "images_per_class": images_per_class,
        "test_fraction": test_fraction,
        "seed": seed,
        "version": 1,
    }
    marker = os.path.join(output_dir, _MARKER)
    if os.path.exists(marker):
        with open(marker) as f:
            if json.load(f) == params:
                return output_dir
    n_test = max(1, round(images_per_class * test_fraction))
    for class_name in CLASS_NAMES:
        for index in range(images_per_class):
            split = "test" if index < n_test else "train"
            pil_format, extension = _format_for(index)
            path = os.path.join(
                output_dir, split, class_name, f"{class_name}_{index:04d}.{extension}"
            )
            os.makedirs(os.path.dirname(path), exist_ok=True)
            image = demo_image(class_name, index, seed)
            if pil_format == "gif":
                image = image.convert("P", palette=Image.ADAPTIVE)
            image.save(
                path, pil_format.upper(), **({"quality": 90} if pil_format == "jpeg" else {})
            )
    for relpath, content in BROKEN_FILES.items():
        if content is None:
            buffer = io.BytesIO()
            demo_image("hot_dog", images_per_class, seed).save(buffer, "JPEG")
            content = buffer.getvalue()[: buffer.tell() // 2]
        with open(os.path.join(output_dir, relpath), "wb") as f:
            f.write(content)
    with open(marker, "w") as f:
        json.dump(params, f)
    return output_dir
