"""Face detection shared by the corpus checks and the live visual front end."""

from engines.faces.detector import LANDMARK_NAMES, Detections, FaceDetector

__all__ = ["Detections", "FaceDetector", "LANDMARK_NAMES"]
