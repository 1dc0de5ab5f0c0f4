"""The ``emolens`` command line: a thin layer over the Python API, one verb per capability.

``main`` builds the app from one module per capability (analyze, evaluate, train, export, explain,
feedback and models, people and attendance, video, serving...); ``console`` holds what they share.
"""

from emolens.cli.analyze import EXAMPLE
from emolens.cli.console import console, err, fail
from emolens.cli.main import app

__all__ = ["EXAMPLE", "app", "console", "err", "fail"]
