"""Face detection: one interface, several backends, chosen by name."""

from emolens.detect.base import Detector, DetectorOptions, Face, create_detector, list_detectors, register_detector

__all__ = ["Detector", "DetectorOptions", "Face", "create_detector", "list_detectors", "register_detector"]
