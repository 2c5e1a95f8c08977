"""Text compression: Huffman, LZ77, LZ78, the language-model arithmetic coder, containers and step pictures."""
