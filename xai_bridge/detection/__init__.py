"""Object detectors: one map per detection, through every perturbation method.

A detector returns boxes, labels and scores per image; the detections to
explain are chosen on the unperturbed image, and each perturbed image is
scored by how well each target detection is found again (the D-RISE
similarity, defined once in :mod:`.detections`). numpy only at import time.
"""

from .detections import Detections, Detector, GradientDetector, box_iou, similarity
from .routing import explain_detections
from .score_model import DetectionScoreModel

__all__ = [
    "DetectionScoreModel",
    "Detections",
    "Detector",
    "GradientDetector",
    "box_iou",
    "explain_detections",
    "similarity",
]
