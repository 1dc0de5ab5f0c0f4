"""One router per resource: analyses, feedback, models (and fine-tuning jobs), health."""
