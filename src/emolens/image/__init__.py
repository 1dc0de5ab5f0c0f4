"""Pixels: decoding images safely, aligning faces, measuring how readable a face is, and the
degradations that imitate poor cameras."""
