"""Settings the text-codec tests share."""

from __future__ import annotations

import dataclasses

from models.compression.text import lm_codec


def compact_settings(**kw) -> lm_codec.CodecSettings:
    """The compact preset, which takes the tiny test model's whole context (128 tokens), in fp32 (every CPU runs
    it); ``kw`` overrides any setting."""
    return dataclasses.replace(lm_codec.PRESETS["compact"], precision="fp32", **kw)
