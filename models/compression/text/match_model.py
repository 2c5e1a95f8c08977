"""A match model: the longest earlier occurrence of the current context predicts what followed it.

LZ77 points back at an earlier copy of the text it is about to write; this is the same idea as a
predictor (LZP, Bloom 1996; the match model of PAQ): find where the last ``min_len`` tokens
occurred before, and predict the token that came next there. While the predictions come true the
match grows longer, and a long match is rarely wrong, so the mixer learns to trust it by length.

Lanes: the text is coded as several pieces side by side; a match may point into any lane's
tokens coded so far (both sides know them), so a repeat is found across the whole text.
"""

from __future__ import annotations

# A match is checked backwards at most this far: lengths beyond it are one bucket for the mixer anyway.
MAX_VERIFY = 64


class MatchModel:
    """``predict(lane)`` -> (token, match length) or None; ``update(tokens_by_lane)`` after each step.

    ``histories[lane]`` is each lane's token list (the caller's, appended to by ``update``).
    """

    def __init__(self, lanes: int, min_len: int) -> None:
        if min_len < 1:
            raise ValueError("the match model needs a context of at least one token")
        self.min_len = min_len
        self.histories: list[list[int]] = [[] for _ in range(lanes)]
        self.index: dict[tuple[int, ...], tuple[int, int]] = {}  # last min_len tokens -> (lane, position after)
        self.state: list[tuple[int, int, int] | None] = [None] * lanes  # (source lane, source position, length)

    def predict(self, lane: int) -> tuple[int, int] | None:
        state = self.state[lane]
        if state is None:
            return None
        src_lane, pos, length = state
        source = self.histories[src_lane]
        if pos >= len(source):  # the source's next token is not coded yet (it ran into the present)
            return None
        return source[pos], length

    def update(self, tokens: dict[int, int]) -> None:
        """Append each lane's new token (lane order), then move, end or look up each lane's match."""
        guesses = {lane: self.predict(lane) for lane in tokens}
        for lane, token in tokens.items():
            self.histories[lane].append(token)
        for lane, token in tokens.items():
            history = self.histories[lane]
            guess = guesses[lane]
            state = self.state[lane]
            if guess is not None and guess[0] == token and state is not None:
                self.state[lane] = (state[0], state[1] + 1, state[2] + 1)
            else:
                self.state[lane] = None
            if len(history) < self.min_len:
                continue
            key = tuple(history[-self.min_len:])
            if self.state[lane] is None and key in self.index:
                src_lane, pos = self.index[key]
                self.state[lane] = (src_lane, pos, self._length(lane, src_lane, pos))
            self.index[key] = (lane, len(history))

    def _length(self, lane: int, src_lane: int, pos: int) -> int:
        """How many tokens before ``pos`` in the source equal the lane's last tokens (at least min_len)."""
        history, source = self.histories[lane], self.histories[src_lane]
        n = self.min_len
        while n < MAX_VERIFY and n < len(history) and n < pos and source[pos - n - 1] == history[-n - 1]:
            n += 1
        return n
