"""The GIL-free sha256 pass against hashlib, and the hashlib path it falls back to."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from safetensors.torch import save

from models.compression.checkpoint import codec as checkpoint
from models.compression.checkpoint import sha256_pass


def test_file_and_ranges_match_hashlib():
    if sha256_pass.hash_ranges(b"x", 0, [], []) is None:
        pytest.skip("no libcrypto with SHA256_* here: the codec uses hashlib")
    rng = np.random.default_rng(8)
    data = rng.integers(0, 256, 3 * sha256_pass.PIECE + 12_345, dtype=np.uint8).tobytes()
    base = 77
    # empty ranges, ranges inside one piece, across pieces, touching each other, up to the very end
    cuts = [0, 0, 10, 200_000, sha256_pass.PIECE - base, sha256_pass.PIECE - base + 1, 700_000, 700_000]
    starts, ends = cuts[0::2] + [800_000], cuts[1::2] + [len(data) - base]
    whole, parts = sha256_pass.hash_ranges(data, base, starts, ends)
    assert whole == hashlib.sha256(data).hexdigest()
    assert parts == [hashlib.sha256(data[base + s:base + e]).hexdigest() for s, e in zip(starts, ends, strict=True)]


def test_compress_is_the_same_with_hashlib(monkeypatch):
    rng = np.random.default_rng(9)
    data = save({"a": torch.from_numpy(rng.normal(0, 0.02, (300, 1000)).astype(np.float32)).to(torch.bfloat16),
                 "b": torch.zeros(0), "c": torch.arange(7)})
    blob, report = checkpoint.compress(data)
    monkeypatch.setattr(sha256_pass, "_kernel", False)  # as where libcrypto cannot be found
    assert sha256_pass.hash_ranges(data, 0, [], []) is None
    blob2, report2 = checkpoint.compress(data)
    assert blob2 == blob and report2.sha256 == report.sha256 == hashlib.sha256(data).hexdigest()
    assert checkpoint.decompress(blob2) == data
