"""Chunker: token bounds, overlap, headings kept with their paragraph, stable ids."""

import pytest

from ragtune.knowledge.chunker import chunk_document, chunk_text, split_blocks
from ragtune.knowledge.documents import make_document

LONG = " ".join(f"word{i} alpha beta." for i in range(400))


def doc(text, doc_id="d1", acl=None):
    return make_document(doc_id, "Title", text, {"acl": acl or []})


@pytest.mark.parametrize("size, overlap", [(32, 0), (64, 8), (128, 32)])
def test_every_chunk_is_within_the_token_budget(embedder, size, overlap):
    text = "# Intro\n\n" + LONG + "\n\n## Short\n\nA short paragraph.\n\n" + LONG[:900]
    chunks = chunk_text(text, embedder.counter, size, overlap)
    assert len(chunks) > 3
    assert all(1 <= embedder.counter.count(c) <= size for c in chunks)


def test_long_paragraph_windows_overlap_by_the_configured_tokens(embedder):
    text = " ".join(f"w{i}x{i * 7} alpha beta." for i in range(300))  # words of several tokens
    chunks = chunk_text(text, embedder.counter, 40, 10)
    assert len(chunks) > 5
    for left, right in zip(chunks, chunks[1:]):
        shared = max((n for n in range(1, len(right)) if left.endswith(right[:n])), default=0)
        shared_tokens = embedder.counter.count(right[:shared])
        assert 0 < shared_tokens <= 10
        assert right.split()[0] in left.split()  # starts on a whole word of the window before


def test_no_overlap_means_no_shared_text(embedder):
    chunks = chunk_text(LONG, embedder.counter, 40, 0)
    assert "".join(c.replace(" ", "") for c in chunks) == LONG.replace(" ", "")


def test_heading_stays_with_its_paragraph(embedder):
    text = "para one " * 20 + "\n\n## Setup\n\nInstall the thing.\n\n" + "para two " * 20
    chunks = chunk_text(text, embedder.counter, 48, 0)
    holder = [c for c in chunks if "## Setup" in c]
    assert len(holder) == 1 and "Install the thing." in holder[0]


def test_small_paragraphs_are_packed_together(embedder):
    text = "\n\n".join(f"Paragraph number {i}." for i in range(6))
    assert chunk_text(text, embedder.counter, 200, 16) == [text]
    assert split_blocks("# H\n\nbody\n\nnext") == ["# H\n\nbody", "next"]


def test_overlap_must_be_smaller_than_size(embedder):
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("x", embedder.counter, 10, 10)


def test_chunk_ids_are_stable_and_change_only_with_their_chunk(embedder):
    base = "# A\n\n" + "alpha " * 60 + "\n\n# B\n\n" + "beta " * 60
    first = chunk_document(doc(base), embedder.counter, 80, 0)
    again = chunk_document(doc(base), embedder.counter, 80, 0)
    assert [c.chunk_id for c in first] == [c.chunk_id for c in again]
    edited = chunk_document(doc(base.replace("beta beta", "gamma beta", 1)), embedder.counter, 80, 0)
    assert first[0].chunk_id == edited[0].chunk_id
    assert first[-1].chunk_id != edited[-1].chunk_id
    other_doc = chunk_document(doc(base, doc_id="d2"), embedder.counter, 80, 0)
    assert not {c.chunk_id for c in first} & {c.chunk_id for c in other_doc}
    restricted = chunk_document(doc(base, acl=["hr"]), embedder.counter, 80, 0)
    assert not {c.chunk_id for c in first} & {c.chunk_id for c in restricted}  # an acl change rewrites rows


def test_repeated_text_in_one_document_gets_distinct_ids(embedder):
    chunks = chunk_document(doc("same words here\n\n" * 2 + "x " * 300), embedder.counter, 5, 0)
    assert len({c.chunk_id for c in chunks}) == len(chunks)
