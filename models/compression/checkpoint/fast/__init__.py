"""Opt-in fast path of the checkpoint codec: the same kernels as ``checkpoint/planes.py``, hand-unrolled."""
