"""`litlab predict` on image files: MNIST-style and CIFAR-style preprocessing, predictions.csv, bad files."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

import datamodules.images as images
from cli import cli_main
from conftest import REPO
from datamodules.images import ImageFileError, digit_like_mnist, open_image, photo_like_cifar

QUICKSTART = ["--config", str(REPO / "configs" / "base.yaml"), "--config", str(REPO / "configs" / "quickstart.yaml"),
              "--trainer.enable_progress_bar", "false"]
FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"  # ships with matplotlib


def draw_digits(folder: Path) -> dict[str, int]:
    """Dark digits in DejaVu Sans on light, slightly coloured paper, at two sizes and places: {file name: digit}."""
    folder.mkdir()
    truth = {}
    for d in range(10):
        for size, shift in ((90, 0), (60, 12)):
            img = Image.new("RGB", (120, 150), (235, 230, 220))
            ImageDraw.Draw(img).text((30 + shift, 10 + shift), str(d), font=ImageFont.truetype(str(FONT), size),
                                     fill=(20, 20, 30), stroke_width=3, stroke_fill=(20, 20, 30))
            img.save(folder / f"digit{d}_{size}.png")
            truth[f"digit{d}_{size}.png"] = d
    return truth


def test_a_dark_digit_on_light_paper_becomes_an_mnist_digit():
    paper = np.full((300, 200), 230, dtype=np.uint8)
    paper[40:240, 60:100] = 10  # a dark bar 200 high, 40 wide, off-centre
    x = digit_like_mnist(Image.fromarray(paper))
    assert x.shape == (1, 28, 28) and x.dtype == torch.uint8
    ink = x[0].float()
    rows, cols = (ink > 64).any(1).nonzero().flatten(), (ink > 64).any(0).nonzero().flatten()
    assert rows[-1] - rows[0] + 1 == 20 and cols[-1] - cols[0] + 1 == 4  # longest side scaled to 20 (200 -> 20)
    assert ink.max() == 255 and ink[0].sum() == 0 and ink[:, 0].sum() == 0  # inverted: bright ink, black paper
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    centre = ((yy * ink).sum() / ink.sum(), (xx * ink).sum() / ink.sum())
    assert abs(centre[0] - 13.5) <= 0.5 and abs(centre[1] - 13.5) <= 0.5  # centred by centre of mass


def test_a_light_digit_on_black_is_not_inverted_and_a_blank_image_is_refused():
    dark = np.zeros((50, 50), dtype=np.uint8)
    dark[10:40, 20:30] = 250
    assert digit_like_mnist(Image.fromarray(dark))[0].max() == 255
    with pytest.raises(ImageFileError, match="blank"):
        digit_like_mnist(Image.fromarray(np.full((50, 50), 200, dtype=np.uint8)))


def test_a_photo_becomes_a_cifar_image_of_its_central_square():
    photo = np.zeros((60, 100, 3), dtype=np.uint8)
    photo[:, :20] = (0, 0, 255)  # blue strips left and right, cut off by the central 60x60 square
    photo[:, 80:] = (0, 0, 255)
    photo[:, 20:80] = (200, 10, 10)
    x = photo_like_cifar(Image.fromarray(photo))
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8
    assert (x[0] > 190).all() and (x[2] < 20).all()


def test_huge_and_truncated_files_get_an_error_naming_them(tmp_path, monkeypatch):
    noise = np.random.default_rng(0).integers(0, 256, (100, 200), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    with pytest.raises(ImageFileError, match=r"big.png: 200x100 pixels is too large"):
        open_image(tmp_path / "big.png")
    monkeypatch.undo()
    assert open_image(tmp_path / "big.png").size == (200, 100)
    data = (tmp_path / "big.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageFileError, match="cut.png: not a readable"):
        open_image(tmp_path / "cut.png")


@pytest.mark.timeout(600)
def test_predict_classifies_font_digits_after_training_on_the_embedded_mnist(tmp_path):
    fit = cli_main(["fit", *QUICKSTART, "--trainer.max_epochs", "5", "--test_after_fit", "false"])
    truth = draw_digits(tmp_path / "mine")
    (tmp_path / "mine" / "notes.png").write_text("not an image")
    (tmp_path / "mine" / "empty.jpg").write_bytes(b"")
    (tmp_path / "mine" / "readme.txt").write_text("skipped: not a .png/.jpg")
    best = fit.trainer.checkpoint_callback.best_model_path
    with pytest.raises(SystemExit) as exc:
        cli_main(["predict", *QUICKSTART, "--ckpt_path", best, "--data.predict_path", str(tmp_path / "mine")])
    # The unreadable files are named in the one error line; the others are predicted all the same.
    assert str(exc.value).startswith("litlab: 2 of 22 files could not be predicted")
    assert "notes.png: not a readable" in str(exc.value) and "empty.jpg: the file is empty" in str(exc.value)
    [written] = Path("runs/quickstart").glob("*/predictions.csv")
    rows = {Path(r["file"]).name: r for r in csv.DictReader(written.open())}
    assert set(rows) == {*truth, "notes.png", "empty.jpg"}
    assert rows["empty.jpg"]["predicted"] == "" and "empty" in rows["empty.jpg"]["error"]
    right = sum(rows[name]["predicted"] == str(d) for name, d in truth.items())
    assert right >= 14, f"{right}/20 font digits right"
    for name in truth:
        p = [float(rows[name][k]) for k in ("probability", "top2_probability", "top3_probability")]
        assert p == sorted(p, reverse=True) and rows[name]["top2"] != rows[name]["predicted"]
