"""benchmarks/protocols.py: the same writers and enrolled form under each protocol."""

from __future__ import annotations

from pathlib import Path

from benchmarks.protocols import PROTOCOLS, protocols
from iam_writers_tfds.kaggle_layout import Record


def _records() -> list[Record]:
    """Writer 001: forms a (5 lines) and b (3); writer 002: form c alone (4), listed out of
    reading order."""
    lines = [("001", "a", 5), ("001", "b", 3), ("002", "c", 4)]
    records = [Record(Path(f"{f}-s00-{k:02d}.png"), f"{f}-s00-{k:02d}", f, w)
               for w, f, n in lines for k in range(n)]
    return records[::-1]


def test_each_protocol_enrols_the_same_form_and_queries_as_it_says() -> None:
    records = _records()
    lines = {r.image_id: i for i, r in enumerate(records)}

    def ids(form: str, ks) -> list[int]:
        return [lines[f"{form}-s00-{k:02d}"] for k in ks]

    for seed in range(6):
        split = protocols(records, seed, {"001", "002"})
        assert list(split) == list(PROTOCOLS) and split == protocols(records, seed,
                                                                     {"001", "002"})
        enrolled, queried = split["another document, whole forms"]
        assert sorted(queried) == ["001"]  # one-form writers: in the gallery, never queried
        assert enrolled["002"] == ids("c", range(4))
        form, other = ("a", "b") if enrolled["001"] == ids("a", range(5)) else ("b", "a")
        assert enrolled["001"] == ids(form, range({"a": 5, "b": 3}[form]))
        assert queried["001"] == [ids(other, range({"a": 5, "b": 3}[other]))]
        half = {"a": 3, "b": 2}[form]  # the first half of the enrolled form, rounded up
        second = ids(form, range(half, {"a": 5, "b": 3}[form]))
        assert split["same document"] == ({"001": ids(form, range(half)),
                                           "002": ids("c", range(2))}, {"001": [second]})
        assert split["another document"] == ({"001": ids(form, range(half)),
                                              "002": ids("c", range(2))},
                                             {"001": [ids(other, range(len(second)))]})
    assert not protocols(records, 0, {"002"})["same document"][1]  # 001 is not probed
    assert {protocols(records, s, {"001"})["same document"][0]["001"][0] for s in range(6)} == {
        lines["a-s00-00"], lines["b-s00-00"]}  # the seed chooses the enrolled form
