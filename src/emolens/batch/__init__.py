"""Batch analysis at any scale: a folder, a glob or a manifest of images into a Parquet dataset.

>>> from emolens.batch import BatchOptions, run_batch
>>> summary = run_batch("photos/", "out/", BatchOptions(workers=4))    # resumable: run it again after a crash
>>> summary = run_batch("manifest.parquet", "out/", BatchOptions(ray=True))   # the same job on Ray Data

One row per face, and one per image without a face or that failed (with the reason); shards are
written whole or not at all, so an interrupted run resumes where it stopped and a repeated run
changes nothing. Needs ``pip install 'emolens[batch]'`` (pyarrow; Ray for ``ray=True``).
"""

from __future__ import annotations

from emolens.core.lazy import lazy_exports

_LAZY = {
    "BatchJob": "emolens.batch.runner",
    "BatchOptions": "emolens.batch.runner",
    "BatchSummary": "emolens.batch.runner",
    "BatchInterruptedError": "emolens.batch.runner",
    "run_batch": "emolens.batch.runner",
    "read_output": "emolens.batch.runner",
    "ShardReport": "emolens.batch.shard",
    "ShardWorker": "emolens.batch.shard",
    "output_schema": "emolens.batch.shard",
    "Manifest": "emolens.batch.manifest",
    "read_input": "emolens.batch.manifest",
}

__getattr__, __all__ = lazy_exports(__name__, _LAZY)
