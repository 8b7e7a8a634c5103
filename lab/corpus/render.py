"""Backgrounds and camera/codec degradations shared by all scene kinds.

Why degrade: real frames are blurred, noisy, unevenly lit and compressed; a model trained on
clean vector drawings would not transfer. Everything is drawn from the caller's random generator.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A procedural room-like background: gradient wall, optional shelves/frames/blobs, texture."""
    c0 = rng.integers(30, 230, 3).astype(np.float32)
    c1 = np.clip(c0 + rng.normal(0, 40, 3), 0, 255).astype(np.float32)
    t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    img = (c0 * (1 - t) + c1 * t) * np.ones((1, width, 1), np.float32)
    img = img.astype(np.uint8)
    kind = rng.integers(3)
    for _ in range(int(rng.integers(2, 7))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(width // 10, width // 3)), int(rng.integers(height // 10, height // 3))
        if kind == 0:  # picture frames / windows
            cv2.rectangle(img, (x, y), (x + w, y + h), colour, -1)
            cv2.rectangle(img, (x, y), (x + w, y + h), (40, 40, 40), max(1, width // 200))
        elif kind == 1:  # shelves and furniture
            cv2.rectangle(img, (0, y), (width, y + max(2, h // 8)), colour, -1)
        else:  # soft blobs (plants, lamps out of focus)
            cv2.ellipse(img, (x, y), (w // 2, h // 2), 0, 0, 360, colour, -1, cv2.LINE_AA)
    if rng.random() < 0.7:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(1.0, 4.0)))  # depth of field
    noise = rng.normal(0, rng.uniform(2, 8), (height // 4 + 1, width // 4 + 1, 1)).astype(np.float32)
    noise = cv2.resize(noise, (width, height))[..., None]
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Degradation:
    """Per-clip camera and codec model, applied to every frame."""

    light_gain: float  # overall exposure
    light_slope: tuple[float, float]  # brightness gradient across the frame (x, y)
    blur_sigma: float  # lens/motion softness (px), 0 = none
    noise_sigma: float  # sensor noise (grey levels)
    jpeg_quality: int  # 0 = none, else JPEG round trip as a stand-in for H.264 blocking

    @staticmethod
    def random(rng: np.random.Generator) -> "Degradation":
        return Degradation(
            light_gain=float(rng.uniform(0.75, 1.2)),
            light_slope=(float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.3, 0.3))),
            blur_sigma=float(rng.choice([0.0, rng.uniform(0.5, 1.5)])),
            noise_sigma=float(rng.uniform(0.0, 6.0)),
            jpeg_quality=int(rng.choice([0, int(rng.integers(35, 95))])),
        )

    @staticmethod
    def none() -> "Degradation":
        return Degradation(1.0, (0.0, 0.0), 0.0, 0.0, 0)

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = img.shape[:2]
        out = img.astype(np.float32)
        out *= _light_map(h, w, self.light_gain, self.light_slope)[..., None]
        if self.noise_sigma > 0:
            out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(self.noise_sigma)
        out = np.clip(out, 0, 255, out=out).astype(np.uint8)
        if self.blur_sigma > 0:
            out = cv2.GaussianBlur(out, (0, 0), self.blur_sigma)
        if self.jpeg_quality > 0:
            ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        return out


@functools.lru_cache(maxsize=16)
def _light_map(h: int, w: int, gain: float, slope: tuple[float, float]) -> np.ndarray:
    """Exposure times a linear brightness gradient (uneven room light), same for every frame."""
    gx = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :] * slope[0]
    gy = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None] * slope[1]
    return (gain * (1 + gx + gy)).astype(np.float32)


class PoseWalk:
    """Smooth head motion: a damped random walk on offset, roll, yaw and scale."""

    def __init__(self, rng: np.random.Generator, amount: float = 1.0) -> None:
        self.rng = rng
        self.amount = amount
        self.state = np.zeros(5, np.float32)  # dx, dy (face units), roll (deg), yaw, log-scale
        self.vel = np.zeros(5, np.float32)
        self.step_sd = np.array([0.012, 0.01, 0.5, 0.02, 0.004], np.float32) * amount
        self.limit = np.array([0.25, 0.15, 12.0, 0.5, 0.08], np.float32) * max(amount, 1e-6)

    def step(self) -> np.ndarray:
        self.vel = 0.85 * self.vel + self.rng.normal(0, 1, 5).astype(np.float32) * self.step_sd
        self.state = np.clip(self.state + self.vel, -self.limit, self.limit)
        return self.state.copy()
