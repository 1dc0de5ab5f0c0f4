"""Identity and attendance: who is in front of the camera, "unknown" for anyone else, who was present.

>>> from emolens.identify import People
>>> people = People()
>>> people.enroll_folder("class/")          # one subfolder per person, e.g. STU001_Jane_Doe/
>>> people.train()                          # cross-validated classifier, threshold, report, version
>>> people.identify("photo.jpg")            # [Match(key='STU001', name='Jane Doe', ...), ...]

Attributes are imported lazily: ``import emolens.identify`` loads neither dlib nor scikit-learn.
"""

from __future__ import annotations

from emolens.core.lazy import lazy_exports

_LAZY = {
    "People": "emolens.identify.gallery",
    "Person": "emolens.identify.gallery",
    "Match": "emolens.identify.gallery",
    "EnrollReport": "emolens.identify.enrol",
    "TrainResult": "emolens.identify.versions",
    "VersionInfo": "emolens.identify.versions",
    "parse_person_folder": "emolens.identify.enrol",
    "NotTrainedError": "emolens.identify.versions",
    "NoUsableFaceError": "emolens.identify.enrol",
    "InvalidPersonError": "emolens.store.people",
    "AttendanceSession": "emolens.identify.attendance",
    "AttendanceReport": "emolens.identify.attendance",
    "FrameResult": "emolens.identify.attendance",
    "VideoSummary": "emolens.identify.attendance",
    "list_sessions": "emolens.identify.attendance",
    "Embedder": "emolens.identify.embed",
    "DlibEmbedder": "emolens.identify.embed",
    "OnnxEmbedder": "emolens.identify.embed",
    "create_embedder": "emolens.identify.embed",
}

__getattr__, __all__ = lazy_exports(__name__, _LAZY)
