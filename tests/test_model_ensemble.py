"""The two-model estimate's pieces (benchmarks/model_ensemble.py): vocabularies folded by bytes, segments
between common token boundaries, and byte offsets of a real tokenizer's tokens."""

import numpy as np
import pytest

from benchmarks.model_ensemble import byte_ends, longest_prefix_map, segment_bits, token_bytes


def test_each_second_token_counts_for_the_longest_first_token_it_begins_with():
    first = [b" Al", b" Alice", b"ice", None, b"x"]
    second = [b" Alic", b" Alice's", b"ic", b"zz", None, b" A"]
    fold = longest_prefix_map(second, first)
    assert fold.tolist() == [0, 1, len(first), len(first), len(first), len(first)]
    # every second-model probability lands on exactly one column, so a folded distribution sums to 1
    p = np.array([0.1, 0.2, 0.3, 0.15, 0.05, 0.2])
    folded = np.zeros(len(first) + 1)
    np.add.at(folded, fold, p)
    assert folded.sum() == pytest.approx(1.0)


def test_segments_end_where_both_tokenizations_end_a_token():
    # "the cat" as [the][ c][at] and [th][e][ cat]: common ends at 3 and 7
    ends_a, bits_a = np.array([3, 5, 7]), np.array([1.0, 2.0, 4.0])
    ends_b, bits_b = np.array([2, 3, 7]), np.array([0.5, 0.25, 3.0])
    seg_a, seg_b = segment_bits(ends_a, bits_a, ends_b, bits_b)
    assert seg_a.tolist() == [1.0, 6.0]
    assert seg_b.tolist() == [0.75, 3.0]
    assert seg_a.sum() == bits_a.sum() and seg_b.sum() == bits_b.sum()


def test_byte_ends_and_token_bytes_spell_the_text_with_a_real_tokenizer(gpt2_tokenizer):
    tokenizer = gpt2_tokenizer
    text = "Alice’s “well”\n\n  said: naïve"
    ids = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids
    ends = byte_ends(tokenizer, text, ids)
    pieces = token_bytes(tokenizer)
    data = text.encode("utf-8")
    assert ends[-1] == len(data) and np.all(np.diff(ends) >= 0)
    assert b"".join(pieces[i] for i in ids) == data
    with pytest.raises(ValueError):
        byte_ends(tokenizer, text, ids[:-1])
