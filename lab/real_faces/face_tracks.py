"""Stage 1 of issue 16: a cache of real face tracks — per frame presence, mesh lip features and an aligned
grey mouth crop — with each clip's own 16 kHz audio.

    python -m lab.real_faces.face_tracks                      # every voxceleb identity + talking/, 2 processes
    python -m lab.real_faces.face_tracks --workers 1 --only id01
    python -m lab.real_faces.face_tracks --report             # frames, faces found, size of what is cached

Per clip: PyAV decodes video and audio (audio resampled to 16 kHz mono and aligned to the first video
frame); CenterFace finds faces in every frame; one face track is kept (the detection overlapping the
previous frame's box, else the largest, most central face); the MediaPipe face mesh runs on that box;
`engines.faces.mouth_roi` turns the landmarks into the 83-number lip vector and the 32×48 mouth crop,
the same functions the live front end calls. A frame with no detection holds the last box for up to
``HOLD_FRAMES`` frames; ``present`` is 1 only where a face was detected *and* the mesh believes it holds
a face.

Output (``out/real_faces/cache/<id>.npz``, one per voxceleb identity, and ``talking.npz``), every
per-frame array concatenated over the clips with ``frame_offsets`` / ``audio_offsets`` (C + 1):
  names (C,), fps (C,), present (F,) uint8, detected (F,) uint8, mesh_score (F,) float16,
  inside (F,) uint8 (all 40 lip points inside the detector box), box (F, 4) float32,
  lips (F, 83) float32, crops (F, 32, 48) uint8, audio (S,) int16 at 16 kHz.
Identity files are written whole (write then rename), so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("EARSHOT_DATA") or REPO.parent / "shared" / "data")
VOXCELEB = DATA / "video" / "real" / "voxceleb"
TALKING = DATA / "video" / "real" / "talking"
CACHE_DIR = REPO / "out" / "real_faces" / "cache"
SAMPLE_RATE = 16000
HOLD_FRAMES = 6  # a missed detection keeps the last box this long (0.24 s at 25 fps), marked not present

#: Identity split, fixed before any training (ids 01–10 are women, 11–16 men). Models are chosen on
#: VALIDATION; TEST is reported only. Each held-out pair is one woman and one man.
TEST_IDS = ("id05", "id14")
VALIDATION_IDS = ("id09", "id13")
TRAIN_IDS = tuple(f"id{i:02d}" for i in range(1, 17) if f"id{i:02d}" not in TEST_IDS + VALIDATION_IDS)


def require_data() -> None:
    if not VOXCELEB.is_dir():
        raise SystemExit(f"SHARED DATA MISSING: {VOXCELEB} (real face tracks; set EARSHOT_DATA or put the shared "
                         "data beside the checkout)")


def decode(path: Path) -> tuple[list[np.ndarray], np.ndarray, float]:
    """(BGR frames, 16 kHz mono float32 audio aligned so sample 0 is the first frame's time, fps)."""
    import av

    from media.av_io import audio_from

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        frames, first_pts = [], None
        for frame in container.decode(video=0):
            if first_pts is None and frame.time is not None:
                first_pts = float(frame.time)
            frames.append(frame.to_ndarray(format="bgr24"))
    audio = audio_from(path, first_pts or 0.0, SAMPLE_RATE)
    want = int(round(len(frames) / fps * SAMPLE_RATE))
    audio = np.pad(audio, (0, max(0, want - len(audio))))[:want]
    return frames, audio, fps


def choose_face(boxes: np.ndarray, previous: np.ndarray | None, shape: tuple[int, int]) -> int:
    """Index of the tracked face among this frame's detections (−1 if none)."""
    if len(boxes) == 0:
        return -1
    if previous is not None:
        from engines.faces.tracker import iou_matrix

        overlap = iou_matrix(previous[None], boxes)[0]
        if overlap.max() > 0.3:
            return int(np.argmax(overlap))
    h, w = shape
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (h * w)
    centre = np.hypot((boxes[:, 0] + boxes[:, 2]) / (2 * w) - 0.5, (boxes[:, 1] + boxes[:, 3]) / (2 * h) - 0.5)
    return int(np.argmax(area * (1.0 - centre)))


@dataclass
class Track:
    name: str
    fps: float
    present: np.ndarray
    detected: np.ndarray
    mesh_score: np.ndarray
    inside: np.ndarray
    box: np.ndarray
    lips: np.ndarray
    crops: np.ndarray
    audio: np.ndarray
    seconds: float  # compute time


class TrackBuilder:
    """Detector + mesh, opened once per process."""

    def __init__(self) -> None:
        from engines.faces import FaceDetector
        from engines.faces.face_mesh import FaceMesh

        self.detector = FaceDetector(num_threads=1)
        self.mesh = FaceMesh(threads=1)

    def frames_track(self, frames: list[np.ndarray], name: str = "", fps: float = 25.0,
                     audio: np.ndarray | None = None) -> Track:
        import cv2

        from engines.faces.face_mesh import LIPS_INNER, LIPS_OUTER
        from engines.faces.mouth_roi import CROP_H, CROP_W, LIP_VECTOR_DIM, lip_vector, mouth_crop

        start = time.process_time()
        n = len(frames)
        present, detected, inside = (np.zeros(n, np.uint8) for _ in range(3))
        score = np.zeros(n, np.float16)
        box = np.zeros((n, 4), np.float32)
        lips = np.zeros((n, LIP_VECTOR_DIM), np.float32)
        crops = np.zeros((n, CROP_H, CROP_W), np.uint8)
        previous, missed = None, 0
        lip_points = list(LIPS_OUTER + LIPS_INNER)
        for t, bgr in enumerate(frames):
            det = self.detector.detect(bgr)
            k = choose_face(det.boxes, previous, bgr.shape[:2])
            if k >= 0:
                current, missed = det.boxes[k], 0
                detected[t] = 1
            elif previous is not None and missed < HOLD_FRAMES:
                current, missed = previous, missed + 1
            else:
                previous = None
                continue
            mesh = self.mesh(bgr, current)
            points = mesh.landmarks[0]
            score[t] = mesh.presence[0]
            box[t] = current
            present[t] = int(detected[t] and mesh.presence[0] > 0.5)
            xy = points[lip_points, :2]
            inside[t] = int(np.all((xy >= current[:2]) & (xy <= current[2:])))
            lips[t] = lip_vector(points)
            crops[t] = mouth_crop(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), points)
            previous = current
        audio = np.zeros(0, np.float32) if audio is None else audio
        return Track(name, fps, present, detected, score, inside, box, lips, crops, audio, time.process_time() - start)

    def clip_track(self, path: Path) -> Track:
        frames, audio, fps = decode(path)
        return self.frames_track(frames, path.stem if path.parent.parent != VOXCELEB else f"{path.parent.name}/{path.stem}",
                                 fps, audio)


_BUILDER: TrackBuilder | None = None


def _track_of(path: str) -> Track:
    global _BUILDER
    if _BUILDER is None:
        _BUILDER = TrackBuilder()
    return _BUILDER.clip_track(Path(path))


def save_tracks(tracks: list[Track], path: Path) -> None:
    frames = np.cumsum([0] + [len(t.present) for t in tracks])
    samples = np.cumsum([0] + [len(t.audio) for t in tracks])
    audio = np.concatenate([t.audio for t in tracks])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(
        tmp, names=np.array([t.name for t in tracks]), fps=np.array([t.fps for t in tracks], np.float32),
        frame_offsets=frames, audio_offsets=samples,
        present=np.concatenate([t.present for t in tracks]), detected=np.concatenate([t.detected for t in tracks]),
        mesh_score=np.concatenate([t.mesh_score for t in tracks]), inside=np.concatenate([t.inside for t in tracks]),
        box=np.concatenate([t.box for t in tracks]), lips=np.concatenate([t.lips for t in tracks]),
        crops=np.concatenate([t.crops for t in tracks]),
        audio=np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16),
        compute_seconds=np.array([t.seconds for t in tracks], np.float32))
    os.replace(tmp, path)


def groups() -> dict[str, list[Path]]:
    """Cache file stem → the clips it holds: one per voxceleb identity, then ``talking``."""
    out = {d.name: sorted(d.glob("*.mp4")) for d in sorted(VOXCELEB.iterdir()) if d.is_dir()}
    if TALKING.is_dir():
        out["talking"] = sorted(p for p in TALKING.iterdir() if p.suffix in (".mp4", ".mpg"))
    return out


def build(workers: int = 2, only: list[str] | None = None, cache_dir: Path = CACHE_DIR) -> dict:
    require_data()
    todo = {k: v for k, v in groups().items() if (not only or k in only) and not (cache_dir / f"{k}.npz").exists()}
    start = time.monotonic()
    frames_done = 0
    with ProcessPoolExecutor(workers) as pool:
        for name, clips in todo.items():
            tracks = list(pool.map(_track_of, map(str, clips)))
            save_tracks(tracks, cache_dir / f"{name}.npz")
            frames_done += sum(len(t.present) for t in tracks)
            wall = time.monotonic() - start
            log.info("%s: %d clips, %d frames, faces %.1f %%, %.0f frames/s overall", name, len(tracks),
                     sum(len(t.present) for t in tracks),
                     100 * np.mean(np.concatenate([t.present for t in tracks])), frames_done / max(wall, 1e-9))
    return report(cache_dir)


def load_group(name: str, cache_dir: Path = CACHE_DIR) -> dict[str, np.ndarray]:
    path = cache_dir / f"{name}.npz"
    if not path.is_file():  # a fresh clone has no cache: say how to build it, not a bare FileNotFoundError
        raise SystemExit(f"FACE CACHE MISSING: {path} (build it: python -m lab.real_faces.face_tracks --only {name})")
    with np.load(path) as raw:
        return dict(raw)


def clips_of(group: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Split a loaded group into one dict per clip (views, audio as float32)."""
    out = []
    fo, ao = group["frame_offsets"], group["audio_offsets"]
    for i, name in enumerate(group["names"]):
        f = slice(fo[i], fo[i + 1])
        clip = {k: group[k][f] for k in ("present", "detected", "mesh_score", "inside", "box", "lips", "crops")}
        clip["audio"] = group["audio"][ao[i]:ao[i + 1]].astype(np.float32) / 32767
        clip["name"], clip["fps"] = str(name), float(group["fps"][i])
        out.append(clip)
    return out


def report(cache_dir: Path = CACHE_DIR) -> dict:
    rows = {}
    for path in sorted(cache_dir.glob("*.npz")):
        if path.name.startswith("."):
            continue
        with np.load(path) as g:
            n = len(g["present"])
            rows[path.stem] = {"clips": len(g["names"]), "frames": n, "present": float(g["present"].mean()),
                               "detected": float(g["detected"].mean()), "inside": float(g["inside"].mean()),
                               "cpu_s": float(g["compute_seconds"].sum()), "bytes": path.stat().st_size}
    vox = [r for k, r in rows.items() if k != "talking"]
    if vox:
        frames = sum(r["frames"] for r in vox)
        rows["voxceleb (all)"] = {
            "clips": sum(r["clips"] for r in vox), "frames": frames,
            "present": sum(r["present"] * r["frames"] for r in vox) / frames,
            "detected": sum(r["detected"] * r["frames"] for r in vox) / frames,
            "inside": sum(r["inside"] * r["frames"] for r in vox) / frames,
            "cpu_s": sum(r["cpu_s"] for r in vox), "bytes": sum(r["bytes"] for r in vox)}
    for k, r in rows.items():
        log.info("%-15s clips %4d frames %6d  present %.2f %%  detected %.2f %%  lips in box %.2f %%  "
                 "%.0f frames per CPU-s (detect+mesh+crop)  %.1f MB", k, r["clips"], r["frames"], 100 * r["present"],
                 100 * r["detected"], 100 * r["inside"], r["frames"] / max(r["cpu_s"], 1e-9), r["bytes"] / 1e6)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2, help="processes (one ONNX Runtime thread each)")
    p.add_argument("--only", nargs="*", default=None, help="cache files to build (id01 … id16, talking)")
    p.add_argument("--report", action="store_true", help="only report what is cached")
    p.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.report:
        report(args.cache_dir)
        return 0
    build(args.workers, args.only, args.cache_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
