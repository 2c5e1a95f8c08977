"""Generation: the sampling maths, streaming tokens to the page, the beam tree and one step seen from inside."""
