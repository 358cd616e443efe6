"""Reciprocal-rank fusion on hand-made rankings, and the access filter."""

import pytest

from ragtune.knowledge.retriever import acl_filter, reciprocal_rank_fusion


def test_fusion_ranks_agreement_first():
    vector = ["a", "b", "c", "d"]
    text = ["c", "a", "e"]
    fused = reciprocal_rank_fusion([vector, text], k=60)
    order = [item for item, _ in fused]
    # a: 1/61 + 1/62; c: 1/63 + 1/61; b: 1/62; e: 1/63; d: 1/64
    assert order == ["a", "c", "b", "e", "d"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)


def test_fusion_k_controls_how_much_top_ranks_dominate():
    rankings = [["x", "y"], ["y", "z"], ["x", "w"]]
    assert reciprocal_rank_fusion(rankings, k=1)[0][0] == "x"  # two first places beat first + second
    assert reciprocal_rank_fusion([["only"]], k=60) == [("only", pytest.approx(1 / 61))]


def test_acl_filter():
    assert acl_filter(None) is None
    assert acl_filter([]) == "public = true"
    assert acl_filter(["hr", "o'brien"]) == "public = true OR array_has_any(acl, make_array('hr', 'o''brien'))"
