"""Synthetic faces: class-conditional generation with a Stable Diffusion model the user already has.

``generate(model, out, classes, per_class)`` writes images by class plus ``status.json`` (model id
and hash, prompts and their hash, seeds, counts, time), enough to reproduce a run. Nothing is
downloaded: the model is a local folder or already in the local Hugging Face cache. Images are
meant to go through the quality gates (``emolens.data.quality``) before they are used.
"""

from emolens.synth.generate import GenerateReport, generate
from emolens.synth.prompts import Prompt, prompts_for

__all__ = ["GenerateReport", "Prompt", "generate", "prompts_for"]
