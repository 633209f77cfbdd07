"""Hostile variants of real bytes, for the property tests that feed them to a decoder."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st


def mutated(seeds: Sequence[bytes], *, min_edits: int = 0) -> st.SearchStrategy[bytes]:
    """One of `seeds` with bytes flipped, cut, inserted or repeated, or another seed
    appended: up to six edits."""

    @st.composite
    def draw_mutated(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(min_edits, 6))):
            kind = draw(st.sampled_from(["flip", "cut", "insert", "append", "dup"]))
            at = draw(st.integers(0, max(0, len(data) - 1)))
            if kind == "flip" and data:
                data[at] ^= draw(st.integers(1, 255))
            elif kind == "cut":
                del data[at : at + draw(st.integers(1, 32))]
            elif kind == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=16))
            elif kind == "append":
                data += draw(st.sampled_from(seeds))
            elif kind == "dup":
                data += data[at : at + draw(st.integers(1, 64))]
        return bytes(data)

    return draw_mutated()
