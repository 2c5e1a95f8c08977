"""Named-entity recognition: the tagger, the CoNLL-2003 reader and seqeval evaluation."""
