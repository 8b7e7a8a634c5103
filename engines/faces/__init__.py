"""Face detection shared by the corpus checks and the live visual front end.

The detector (and OpenCV with it) is imported when first asked for (PEP 562), not with the package:
the speaking-face and fusion nodes read only ``engines.faces.sync_audio_encoder`` of it, and a node
restarted after a crash should not pay for OpenCV it never calls (issue 15).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engines.faces.detector import LANDMARK_NAMES, Detections, FaceDetector

__all__ = ["Detections", "FaceDetector", "LANDMARK_NAMES"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from engines.faces import detector

        return getattr(detector, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
