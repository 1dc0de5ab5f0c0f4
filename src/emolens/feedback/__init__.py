"""Feedback: what users said about faces, and learning material made of it.

>>> from emolens.feedback import FeedbackService
>>> feedback = FeedbackService()
>>> feedback.add_from_results(Analyzer()("photo.jpg"), face=0, label="sad")
>>> feedback.split().to_dict()      # the training and held-out parts, by group

``FeedbackService`` (``emolens.feedback.service``) makes crops, splits, imports and exports;
the rows and files are kept by ``emolens.store.feedback.FeedbackStore``.
"""

from __future__ import annotations

from emolens.feedback.service import FeedbackService
from emolens.feedback.split import FeedbackSplit
from emolens.feedback.streamlit import ImportReport
from emolens.store.feedback import Feedback, FeedbackStore

__all__ = ["Feedback", "FeedbackService", "FeedbackSplit", "FeedbackStore", "ImportReport"]
