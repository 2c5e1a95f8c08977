"""The checkpoint tab (a practitioner's tool, after the lesson): Huffman statistics of a checkpoint's
weights and the bytes a lossless codec saves. The lesson's text compression is components/compress_text.py."""

from __future__ import annotations

from components import compress_checkpoint


def build() -> None:
    compress_checkpoint.build()
