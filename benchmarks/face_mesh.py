"""Milliseconds per face for the face mesh (ONNX Runtime, CPU), batch 1 and batch 2.

Uses a real VoxCeleb face from ../shared/data (or $EARSHOT_DATA) when it is there, else a face of the
shipped demo clip. Times the whole `FaceMesh` call (crop + network + mapping back), and the network
alone. Usage: python benchmarks/face_mesh.py [--threads 1] [--repeats 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engines.faces import FaceDetector  # noqa: E402
from engines.faces.face_mesh import SIZE, FaceMesh  # noqa: E402


def first_face(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import av

    detector = FaceDetector()
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            image = frame.to_ndarray(format="bgr24")
            found = detector.detect(image)
            if i >= 25 and len(found):
                return image, found.boxes[0]
    raise SystemExit(f"no face found in {path}")


def p50_ms(fn, repeats: int) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    data = Path(os.environ.get("EARSHOT_DATA") or REPO.parent / "shared" / "data")
    clip = data / "video" / "real" / "voxceleb" / "id01" / "014.mp4"
    clip = clip if clip.is_file() else REPO / "demo" / "demo.mp4"
    image, box = first_face(clip)
    mesh = FaceMesh(threads=args.threads)
    name = clip.relative_to(REPO if clip.is_relative_to(REPO) else data)
    print(f"clip {name}, face box {np.round(box).astype(int).tolist()}, "
          f"{args.threads} thread(s), p50 of {args.repeats}")
    for batch in (1, 2):
        boxes = np.stack([box] * batch)
        whole = p50_ms(lambda: mesh(image, boxes), args.repeats)
        crops = np.random.default_rng(0).random((batch, SIZE, SIZE, 3), dtype=np.float32)
        net = p50_ms(lambda: mesh.engine.run({"image": crops}), args.repeats)
        print(f"batch {batch}: {whole / batch:.2f} ms per face (whole call), {net / batch:.2f} ms per face (network)")


if __name__ == "__main__":
    main()
