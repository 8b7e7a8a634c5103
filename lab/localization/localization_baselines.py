"""Training-free maps the trained model must beat, evaluated in the same command.

* centre prior: a Gaussian in the middle of the frame (objects are framed centrally more often
  than not; in the LVS tables this prior alone is surprisingly strong);
* random map: uniform noise, the floor;
* AV synchrony: per region, the Pearson correlation over the last second between the audio energy
  envelope and the region's motion energy (mean |frame difference|). A sounding object moves with
  its sound; a silent one does not. No learning, so it also tells how much of the task is "find
  what moves in time with the sound".
"""

from __future__ import annotations

import numpy as np

GRID = 14


def centre_prior(grid: int = GRID, sigma: float = 0.25) -> np.ndarray:
    """Gaussian bump at the centre; ``sigma`` as a fraction of the frame side."""
    c = (np.arange(grid) + 0.5) / grid - 0.5
    d2 = c[:, None] ** 2 + c[None, :] ** 2
    return np.exp(-d2 / (2 * sigma**2)).astype(np.float32)


def random_map(rng: np.random.Generator, grid: int = GRID) -> np.ndarray:
    return rng.random((grid, grid)).astype(np.float32)


def motion_energy(history: np.ndarray, grid: int = GRID) -> np.ndarray:
    """(T+1, H, W) grey frames → (T, grid, grid) mean |difference| per region."""
    x = history.astype(np.float32)
    diff = np.abs(np.diff(x, axis=0))
    t, h, w = diff.shape
    return diff[:, : h - h % grid, : w - w % grid].reshape(t, grid, h // grid, grid, w // grid).mean(axis=(2, 4))


def synchrony_map(history: np.ndarray, envelope_db: np.ndarray, grid: int = GRID) -> np.ndarray:
    """Correlation of each region's motion energy with the audio envelope, negatives clipped.

    ``history``: (T+1, H, W) grey frames, oldest first; ``envelope_db``: (T,) audio energy of the
    same T frame intervals. Regions that never move score 0.
    """
    motion = motion_energy(history, grid)  # (T, g, g)
    m = motion - motion.mean(axis=0)
    a = np.asarray(envelope_db, np.float32) - np.mean(envelope_db)
    num = np.tensordot(a, m, axes=(0, 0))
    den = np.sqrt(np.sum(a**2) * np.sum(m**2, axis=0)) + 1e-9
    return np.clip(num / den, 0.0, None).astype(np.float32)
