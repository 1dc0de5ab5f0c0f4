"""ONNX Runtime session options shared by every model EmoLens runs (detector, emotion model).

Why one place: the analyzer runs a detector session and a classifier session in turn, each with
its own intra-op thread pool. By default a pool's threads spin (busy-wait) for a while after each
run, so the next session found its cores busy with the other's spinning (video: detection 36 ms a
frame instead of 19 on 2 cores). With spinning off, an idle pool sleeps at once; measured in
``benchmarks/results/end_to_end.md``.
"""

from __future__ import annotations


def session_options(threads: int = 0, *, spinning: bool = False):
    """``onnxruntime.SessionOptions`` for CPU inference: ``threads`` intra-op threads (0 = all cores),
    one inter-op thread, full graph optimisation, and thread spinning off unless asked for."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads > 0:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return opts
