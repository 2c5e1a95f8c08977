"""Checkpoint compression: byte planes of the weights, Huffman-coded, in a verified container (.lmhz)."""
