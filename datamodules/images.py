"""Your own image files as model input, made the way the training images were (`litlab predict`).

MNIST's digits were size-normalised into a 20x20 box (aspect ratio kept, anti-aliased) and centred by their
centre of mass in a 28x28 field, white ink on black (LeCun et al.'s description of the set). A photo or a
scan of a digit is dark ink on light paper, any size, anywhere in the frame; `digit_like_mnist` redoes those
steps on it. CIFAR-10's images are whole 32x32 RGB photos: `photo_like_cifar` centre-crops to a square and
resizes. Both return `uint8 [C, H, W]`, what the data modules hold in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_BYTES = 50 * 2**20  # a larger file is not a photo of one digit; refuse before reading it
MAX_PIXELS = 40_000_000  # checked from the header, before decoding (a small PNG can decode to gigabytes)


class ImageFileError(ValueError):
    """One image file that cannot be predicted; the message names the file and says why."""


def image_files(path: str | Path) -> list[Path]:
    """The PNG/JPEG files to predict: `path` itself, or those directly in the folder `path`, sorted by name."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"predict_path {path} not found: give an image file (PNG/JPEG) or a folder of them.")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not files:
        raise FileNotFoundError(f"predict_path {path} holds no .png/.jpg/.jpeg files.")
    return files


def open_image(path: Path) -> Image.Image:
    """The decoded image, upright (EXIF orientation applied, as phones store photos), or ImageFileError."""
    size = path.stat().st_size
    if size == 0:
        raise ImageFileError(f"{path}: the file is empty.")
    if size > MAX_BYTES:
        raise ImageFileError(f"{path}: {size / 2**20:.0f} MB is too large for one image "
                             f"(limit {MAX_BYTES // 2**20} MB).")
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise ImageFileError(f"{path}: {img.width}x{img.height} pixels is too large "
                                     f"(limit {MAX_PIXELS:,}); downscale it first.")
            img.load()
            return ImageOps.exif_transpose(img)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise ImageFileError(f"{path}: not a readable PNG/JPEG image ({err}).") from err


def on_white(img: Image.Image) -> Image.Image:
    """Transparent pixels become white paper (a drawing app's PNG); other modes are converted to RGB."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        paper = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, img).convert("RGB")
    return img.convert("RGB")


def digit_like_mnist(img: Image.Image, box: int = 20, size: int = 28, by_mass: bool = True) -> Tensor:
    """A digit as MNIST made them: grey, light ink on black, scaled into `box`x`box`, centred in `size`x`size`
    by its centre of mass (`by_mass`; else by its bounding box). Returns uint8 [1, size, size]."""
    grey = np.asarray(on_white(img).convert("L"), dtype=np.float32)  # [H, W] in 0..255
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(border))
    if background > 127:  # dark ink on light paper: invert, as MNIST's ink is the bright part
        grey, background = 255.0 - grey, 255.0 - background
    # Paper is rarely pure black after inverting (shadows, JPEG noise): what is not brighter than it is 0.
    ink = np.clip(grey - background, 0, None)
    if ink.max() < 32:
        raise ImageFileError("no digit found: the image is blank (no ink darker or lighter than its background).")
    ink = ink * (255.0 / ink.max())
    rows, cols = np.nonzero(ink > 0.25 * 255)
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = crop.shape
    scale = box / max(h, w)
    small = Image.fromarray(crop.astype(np.uint8)).resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    digit = np.asarray(small, dtype=np.float32)  # [h', w'] with max(h', w') == box
    if by_mass:
        yy, xx = np.indices(digit.shape)
        centre = ((yy * digit).sum() / digit.sum(), (xx * digit).sum() / digit.sum())
    else:
        centre = ((digit.shape[0] - 1) / 2, (digit.shape[1] - 1) / 2)
    field = np.zeros((size, size), dtype=np.float32)
    top, left = round((size - 1) / 2 - centre[0]), round((size - 1) / 2 - centre[1])
    # Paste with clipping: a lopsided digit's centre of mass can push a few pixels past the edge.
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + digit.shape[0], size), min(left + digit.shape[1], size)
    field[y0:y1, x0:x1] = digit[y0 - top : y1 - top, x0 - left : x1 - left]
    return torch.from_numpy(np.clip(field, 0, 255).round().astype(np.uint8))[None]


def photo_like_cifar(img: Image.Image, size: int = 32) -> Tensor:
    """A photo as CIFAR-10's: RGB, the central square, resized to `size`x`size`. Returns uint8 [3, size, size]."""
    img = on_white(img)
    side = min(img.size)
    img = ImageOps.fit(img, (side, side), centering=(0.5, 0.5)).resize((size, size), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def load_images(files: list[Path],
                convert: Callable[[Image.Image], Tensor]) -> tuple[Tensor, list[Path], dict[str, str]]:
    """Every file through `convert`: (uint8 [N, C, H, W] of the readable ones, their paths, {path: error} of the
    others). One bad file never stops the rest."""
    images, good, errors = [], [], {}
    for path in files:
        try:
            images.append(convert(open_image(path)))
            good.append(path)
        except ImageFileError as err:
            message = str(err)
            errors[str(path)] = message if message.startswith(str(path)) else f"{path}: {message}"
    stacked = torch.stack(images) if images else torch.zeros(0, 1, 1, 1, dtype=torch.uint8)
    return stacked, good, errors
