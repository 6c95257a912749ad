"""Procedural hand-like images with known key points (SYNTHETIC: no hand data ships).

The finger-tapping tracker of the seed project regresses 4 key points on photos
of a hand. These images are not photos: a palm (ellipse), a forearm, an
extended index finger and thumb and three curled fingers (capsules), at a
random position, scale, rotation and handedness, with a random finger-thumb
aperture (the tapping motion), over a noisy background with a gradient and
distractor blobs. They exercise the same loader, model and metric offline.

Written in the on-disk format :mod:`tune_app.tasks.keypoints_cnn` reads::

    <out>/keypoints.csv      header, then one row per image:
                             image,wrist_x,wrist_y,palm_x,palm_y,
                             thumb_tip_x,thumb_tip_y,index_tip_x,index_tip_y
    <out>/images/000000.png  8-bit greyscale, square, all the same size

Coordinates are pixels: x to the right, y down, (0, 0) the centre of the
top-left pixel.

    python -m tune_app.tasks.keypoints_synth --out DIR [--n 4000] [--size 64] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

KEYPOINTS = ("wrist", "palm", "thumb_tip", "index_tip")
COLUMNS = ("image", *(f"{k}_{a}" for k in KEYPOINTS for a in ("x", "y")))
CSV_NAME = "keypoints.csv"
IMAGE_DIR = "images"


def _capsule(
    xx: np.ndarray, yy: np.ndarray, p: np.ndarray, q: np.ndarray, radius: float
) -> np.ndarray:
    """Anti-aliased coverage of a segment p-q thickened by ``radius``."""
    d = q - p
    t = np.clip(((xx - p[0]) * d[0] + (yy - p[1]) * d[1]) / max(float(d @ d), 1e-9), 0.0, 1.0)
    dist = np.hypot(xx - (p[0] + t * d[0]), yy - (p[1] + t * d[1]))
    return np.clip(radius - dist + 0.5, 0.0, 1.0)


def render(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One image (uint8, size x size) and its key points ((4, 2) pixels, KEYPOINTS order)."""
    s = rng.uniform(0.08, 0.13) * size  # palm half-width
    theta = rng.uniform(-0.6, 0.6)  # tilt from upright
    hand = rng.choice([-1.0, 1.0])  # left/right hand (mirror)
    extent = 3.0 * s + 1.0
    c = rng.uniform(extent, size - 1 - extent, 2)
    u = np.array([np.cos(theta), np.sin(theta)]) * hand  # hand's "right" axis
    v = np.array([np.sin(theta), -np.cos(theta)])  # hand's "up" axis (image y points down)

    def at(a: float, b: float) -> np.ndarray:
        return np.asarray(c + a * s * u + b * s * v)

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cover = np.zeros((size, size))
    # palm: an ellipse of half-axes (s, 1.15 s) in the hand's frame
    rel_a = ((xx - c[0]) * u[0] + (yy - c[1]) * u[1]) / s
    rel_b = ((xx - c[0]) * v[0] + (yy - c[1]) * v[1]) / (1.15 * s)
    cover = np.maximum(cover, np.clip((1.0 - np.hypot(rel_a, rel_b)) * s + 0.5, 0.0, 1.0))
    wrist = at(0.0, -1.15)
    cover = np.maximum(cover, _capsule(xx, yy, wrist, at(0.0, -3.5), 0.7 * s))  # forearm
    # index finger, extended
    phi = rng.uniform(-0.2, 0.3)
    index_base = at(0.45, 0.95)
    index_tip = index_base + rng.uniform(1.4, 1.9) * s * (np.sin(phi) * u + np.cos(phi) * v)
    cover = np.maximum(cover, _capsule(xx, yy, index_base, index_tip, 0.3 * s))
    # thumb: opens away from the index finger by the tapping aperture
    aperture = rng.uniform(0.0, 1.0)
    psi = 0.25 + 1.1 * aperture
    thumb_base = at(-0.75, 0.2)
    thumb_dir = np.sin(-psi) * u + np.cos(psi) * v
    thumb_tip = thumb_base + rng.uniform(1.2, 1.6) * s * thumb_dir
    cover = np.maximum(cover, _capsule(xx, yy, thumb_base, thumb_tip, 0.32 * s))
    # middle, ring and little finger, curled over the palm
    for a, b in ((0.1, 1.0), (-0.25, 0.95), (-0.55, 0.8)):
        base = at(a, b)
        cover = np.maximum(
            cover, _capsule(xx, yy, base, base + rng.uniform(0.3, 0.7) * s * v, 0.27 * s)
        )

    grad = rng.normal(0.0, 0.004, 2)
    background = rng.uniform(0.05, 0.45) + grad[0] * (xx - size / 2) + grad[1] * (yy - size / 2)
    for _ in range(rng.integers(0, 4)):  # distractor blobs
        centre, radius = rng.uniform(0, size, 2), rng.uniform(2.0, 0.15 * size)
        blob = np.clip(radius - np.hypot(xx - centre[0], yy - centre[1]) + 0.5, 0.0, 1.0)
        background = background + rng.uniform(-0.15, 0.15) * blob
    skin = rng.uniform(0.55, 0.9) + 0.05 * rel_b.clip(-2, 2)  # a little shading
    image = background * (1.0 - cover) + skin * cover
    image = image + rng.normal(0.0, rng.uniform(0.02, 0.1), image.shape)
    pixels = (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return pixels, np.stack([wrist, c, thumb_tip, index_tip])


def generate(out: Path, n: int = 4000, size: int = 64, seed: int = 0) -> int:
    """Write ``n`` images and ``keypoints.csv`` under ``out``; return ``n``."""
    from PIL import Image

    if n < 1 or size < 16:
        raise ValueError(f"need n >= 1 and size >= 16, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    with open(out / CSV_NAME, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for i in range(n):
            pixels, points = render(rng, size)
            name = f"{i:06d}.png"
            Image.fromarray(pixels, mode="L").save(out / IMAGE_DIR / name)
            writer.writerow([f"{IMAGE_DIR}/{name}", *(f"{v:.2f}" for v in points.ravel())])
    return n


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write a synthetic key-point folder."""
    parser = argparse.ArgumentParser(prog="python -m tune_app.tasks.keypoints_synth")
    parser.add_argument("--out", required=True, help="folder to write (e.g. DATA_DIR/keypoints)")
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        n = generate(Path(args.out), args.n, args.size, args.seed)
    except ValueError as exc:
        print(f"keypoints_synth: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n} synthetic images and {CSV_NAME} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
