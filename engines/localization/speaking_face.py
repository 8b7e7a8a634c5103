"""Which face is speaking: the lip-sync of each face with the audio heard, decided live.

Why: a still picture cannot tell a speaking face from a silent one beside it, and Senocak's map (trained
on whole frames) finds faces but not *which* face's voice it hears (issue 14: 22 % on the speaking face of
two real people). The lip-sync pair (`engines/faces/lip_encoder.py`, `engines/faces/sync_audio_encoder.py`,
learned on real faces by synchrony) embeds each face's lips and the audio in one space per 40 ms; the face
whose lips follow the sound scores a high mean cosine over the last second, a silent face does not.

Time: audio "group" g is the 40 ms of samples [640 g, 640 g + 640) from the stream's start (4 STFT hops,
one video frame at 25 fps); its embedding needs 0.2 s of audio after it (the encoder's look-ahead), so a
decision lags the sound by ~0.2 s. A face's lip embedding is paired with the group its frame's capture time
falls in (training paired video frame t with group t). Everything is plain numpy + ONNX Runtime through
`engines.loader`; `lab/localization/real_footage.py` scores the same class offline.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from engines.faces.sync_audio_encoder import FLOOR, MARGIN, MEL_PER_FRAME, N_MELS, STFT, WINDOW_FRAMES, sync_logmel

GROUP_SAMPLES = MEL_PER_FRAME * STFT.hop_length  # 640: 40 ms at 16 kHz
WINDOW_MELS = MEL_PER_FRAME * WINDOW_FRAMES + 2 * MARGIN  # 140 mel frames per encoder call


@dataclass(frozen=True)
class SpeakingFaceConfig:
    """Chosen on the validation identities only (id09, id13: one-speaker clips, two-people composites, and the
    clips under another identity's speech) by ``python -m lab.localization.speaking_face_tuning tune``: the
    best J = composite windows on the speaker − on the silent face + one-speaker speech frames on the speaker
    − frames with no speech in the last second picking a face − frames under off-screen speech picking a
    face, and (session 8) frames of two faces under off-screen speech picking a face, over window_groups {13,
    25, 50} × min_groups {4, 8, 12} × threshold 0–0.45 × margin 0–0.2 (figures: `lab/localization/
    REAL_FOOTAGE.md`). A lower threshold picks the speaker more often but calls a silent face speaking under
    off-screen speech (threshold 0 with a 1 s window: 71 % of those frames; these: 6.1 %)."""

    window_groups: int = 50   # score over the last 2 s (1 s at its best threshold: 23 % off-screen picks)
    min_groups: int = 12      # a face needs this many paired groups in the window to be scored (0.48 s)
    threshold: float = 0.25   # mean cosine a face must reach to be called speaking
    margin: float = 0.025     # ... and by how much it must beat the second-best face
    max_pair_ms: float = 40.0  # a lip embedding pairs with a group whose centre is this close in time (not tuned)


def unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-9)


class SyncAudio:
    """Streaming STFT frames (complex, 512 / 160 / 400) → one unit audio embedding per 40 ms group.

    ``push`` takes the next frames in stream order (``first_frame`` = the index of the first, as the stft
    node numbers them) and returns ``[(group, embedding)]`` for every group whose look-ahead is now heard.
    Each embedding is the last of a training-length window, so it sees the same context as in training.
    """

    def __init__(self, engine) -> None:
        self.engine = engine
        self.mel = np.full((0, N_MELS), np.log10(FLOOR), np.float32)
        self.mel_start = 0  # stream index of self.mel[0]
        self.next_group = 0

    def push(self, spectrum: np.ndarray, first_frame: int) -> list[tuple[int, np.ndarray]]:
        end = self.mel_start + len(self.mel)
        if first_frame > end:  # frames lost upstream: fill with the quietest seen (decisions there are weak)
            fill = np.full((first_frame - end, N_MELS), self.mel.min() if len(self.mel) else np.log10(FLOOR), np.float32)
            self.mel = np.concatenate([self.mel, fill])
        elif first_frame < end:  # a repeat: keep what we have
            spectrum = spectrum[end - first_frame:]
        self.mel = np.concatenate([self.mel, sync_logmel(spectrum)])
        out = []
        while True:
            g = self.next_group
            need_end = MEL_PER_FRAME * (g + 1) + MARGIN  # mel frames up to the group's look-ahead
            if self.mel_start + len(self.mel) < need_end:
                break
            lo = need_end - WINDOW_MELS
            window = self._window(lo, need_end)
            emb = self.engine.run({"logmel": window[None]})["embedding"][0, -1]
            out.append((g, unit(emb)))
            self.next_group += 1
        keep_from = MEL_PER_FRAME * self.next_group + MARGIN - WINDOW_MELS
        if keep_from > self.mel_start:
            self.mel = self.mel[keep_from - self.mel_start:]
            self.mel_start = keep_from
        return out

    def _window(self, lo: int, hi: int) -> np.ndarray:
        """Mel frames [lo, hi); before the stream's start, its floor (as training padded a clip's edge)."""
        have_lo = max(lo, self.mel_start)
        body = self.mel[have_lo - self.mel_start:hi - self.mel_start]
        if have_lo > lo:
            body = np.concatenate([np.full((have_lo - lo, N_MELS), body.min(), np.float32), body])
        return np.ascontiguousarray(body, np.float32)


class SpeakingFace:
    """Lip embeddings per face track + audio embeddings per group → each face's sync score, and the speaker.

    Times are on one clock (ns): ``add_lips`` takes a frame's capture time, ``add_audio`` a group's centre
    time. ``scores()`` pairs, for each of the last ``window_groups`` audio groups, the face's lip embedding
    nearest in time (within ``max_pair_ms``) and averages the cosines.
    """

    def __init__(self, config: SpeakingFaceConfig = SpeakingFaceConfig()) -> None:
        self.config = config
        self.audio: deque[tuple[int, np.ndarray]] = deque(maxlen=config.window_groups)
        self.lips: dict[int, deque[tuple[int, np.ndarray]]] = {}

    def add_lips(self, capture_ns: int, track_ids, embeddings: np.ndarray) -> None:
        keep = 2 * self.config.window_groups + 10
        seen = set()
        for tid, emb in zip(np.asarray(track_ids).tolist(), embeddings):
            self.lips.setdefault(tid, deque(maxlen=keep)).append((capture_ns, unit(np.asarray(emb, np.float32))))
            seen.add(tid)
        for tid in list(self.lips):  # a track not seen for the whole window has ended
            if tid not in seen and self.lips[tid][-1][0] < capture_ns - 2e9:
                del self.lips[tid]

    def add_audio(self, centre_ns: int, embedding: np.ndarray) -> None:
        self.audio.append((centre_ns, embedding))

    def scores(self) -> dict[int, float]:
        """Track id → mean cosine over the paired groups of the window (tracks with too few left out)."""
        out = {}
        max_ns = self.config.max_pair_ms * 1e6
        for tid, hist in self.lips.items():
            times = np.array([t for t, _ in hist], np.int64)
            cos = []
            for centre, a in self.audio:
                i = int(np.argmin(np.abs(times - centre)))
                if abs(times[i] - centre) <= max_ns:
                    cos.append(float(hist[i][1] @ a))
            if len(cos) >= self.config.min_groups:
                out[tid] = float(np.mean(cos))
        return out

    def speaker(self, scores: dict[int, float] | None = None) -> tuple[int, float]:
        """(track id, score) of the face speaking, or (−1, 0.0) when none is clear."""
        scores = self.scores() if scores is None else scores
        if not scores:
            return -1, 0.0
        ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
        tid, best = ranked[0]
        second = ranked[1][1] if len(ranked) > 1 else -1.0
        if best < self.config.threshold or best - second < self.config.margin:
            return -1, 0.0
        return tid, best


def group_centre_ns(group: int, last_sample: int, last_capture_ns: int, sample_rate_hz: int = STFT.sample_rate_hz) -> int:
    """Capture time of group ``group``'s centre, from one known (sample index, capture time) of the stream."""
    centre = group * GROUP_SAMPLES + GROUP_SAMPLES // 2
    return int(last_capture_ns - (last_sample - centre) * 1e9 / sample_rate_hz)


def face_bump(box_xyxy: np.ndarray, frame_wh: tuple[int, int], grid_hw: tuple[int, int], peak: float) -> np.ndarray:
    """A (H, W) map with a Gaussian on the box's centre (σ = a third of its size, in grid cells), scaled so
    its highest *cell* is ``peak``: what the fused map adds on the speaking face so its peak lands inside
    the box. (Unscaled, a face one or two cells wide whose centre falls between cell centres sampled to
    ~0.6 of ``peak``, below `fuse`'s 0.75 × map, and the peak stayed where the map had it.)"""
    h, w = grid_hw
    x0, y0, x1, y1 = (np.asarray(box_xyxy, np.float64) / np.array([frame_wh[0], frame_wh[1]] * 2)).tolist()
    cx, cy = (x0 + x1) / 2 * w - 0.5, (y0 + y1) / 2 * h - 0.5
    sx, sy = max((x1 - x0) * w / 3, 0.5), max((y1 - y0) * h / 3, 0.5)
    yy, xx = np.mgrid[0:h, 0:w]
    bump = np.exp(-0.5 * (((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))
    return (peak * bump / max(bump.max(), 1e-12)).astype(np.float32)


def fuse(heatmap: np.ndarray, box_xyxy: np.ndarray | None, frame_wh: tuple[int, int], under: float = 0.75) -> np.ndarray:
    """Senocak's map with the speaking face on top: the map is scaled by ``under`` and a full-height bump
    put on the face, so the peak is the face's while the rest of the map stays visible. Unchanged when no
    face speaks, so a non-speech source (or speech from off screen) lights up where the map puts it."""
    if box_xyxy is None:
        return heatmap
    return np.maximum(heatmap * under, face_bump(box_xyxy, frame_wh, heatmap.shape, 1.0))
