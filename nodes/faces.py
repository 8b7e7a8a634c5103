"""Faces: who is on screen and how their lips move — the visual half of voice isolation.

Why its own node (not inside the visual encoder): the separator needs per-face lip features at
the camera's rate with stable face IDs, the localizer needs whole-frame features; splitting them
lets each run at its own pace and lets a graph use one without the other.

Each frame goes through the real-face front end (`engines/faces/mesh_lip_front_end.py`): CenterFace
detection → IoU tracking with stable IDs (held through short occlusions) → face mesh → aligned mouth
crop and lip vector → the lip encoder learned on real faces by audio-visual sync, whose 64-d embedding
per face is what the separator and the speaking-face node read of the lips. The message keeps the
frame's capture time, so consumers can tell how fresh a face's lips are and pair them with the audio.
"""

from __future__ import annotations

from dataclasses import dataclass

from engines.faces import FaceDetector
from engines.faces.mesh_lip_front_end import MeshLipFrontEnd
from engines.faces.tracker import FaceTracker
from pipeline.messages import FaceTracks, VideoFrame
from pipeline.node import Input, Node, Output


class Faces(Node):
    """Video frames → FaceTracks (boxes, track ids, lip features) per frame."""

    @dataclass
    class Params:
        score_threshold: float = 0.5
        max_side_px: int = 320      # detector input; faces in calls and interviews are large
        max_missed_frames: int = 12  # hold a lost face this long (0.48 s at 25 fps) before its ID ends
        threads: int = 1            # ONNX Runtime CPU threads
        backend: str = "auto"       # "onnxruntime" | "tensorrt" | "auto" (engine layer, engines/README.md)

    # latest: lip motion is about *now*; a backlog of old frames would only add delay
    inputs = {"video": Input(VideoFrame, policy="latest")}
    outputs = {"faces": Output(FaceTracks, doc="boxes (N, 4), stable track ids, lip embeddings (N, 64)")}

    def open(self) -> None:
        p = self.params
        self.detector = FaceDetector(p.score_threshold, max_side_px=p.max_side_px, num_threads=p.threads,
                                     backend=p.backend)
        self.front_end = MeshLipFrontEnd(self.detector, FaceTracker(max_missed=p.max_missed_frames),
                                         backend=p.backend, threads=p.threads)

    def on_message(self, port: str, frame: VideoFrame) -> None:
        faces = self.front_end.process(frame.image)
        self.observe("faces", float(len(faces.track_ids)))
        h, w = frame.image.shape[:2]
        self.send("faces", FaceTracks(boxes=faces.boxes, track_ids=faces.track_ids, lip_features=faces.lip_features,
                                      frame_index=frame.frame_index, frame_width=w, frame_height=h,
                                      capture_ns=frame.capture_ns))

    def close(self) -> None:
        if hasattr(self, "detector"):
            self.detector.close()
