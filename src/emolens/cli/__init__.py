"""The ``emolens`` command line: a thin layer over the Python API, one verb per capability.

``main`` holds the image verbs (analyze, train, evaluate, explain, export...); each capability
beside them (feedback and models, people and attendance, video, serving) registers its own.
"""

from emolens.cli.main import EXAMPLE, app, console, err, fail

__all__ = ["EXAMPLE", "app", "console", "err", "fail"]
