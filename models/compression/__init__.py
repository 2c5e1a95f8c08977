"""Lossless compression of text (text/) and of model checkpoints (checkpoint/); Huffman coding is shared."""
