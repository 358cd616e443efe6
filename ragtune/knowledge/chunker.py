"""Split documents into chunks measured in the embedder's tokens.

Paragraphs stay whole and a heading stays with the paragraph under it whenever
they fit; a paragraph longer than a chunk is cut into overlapping token windows.
A chunk's id is a hash of its document id, access metadata and text, so an
unchanged chunk keeps its id across refreshes and is never embedded twice.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from ragtune.knowledge.documents import Document

HEADING = re.compile(r"^\s{0,3}#{1,6}\s")


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_id: str
    title: str
    text: str
    position: int
    n_tokens: int
    acl: tuple[str, ...]
    source: str
    doc_hash: str


class TokenCounter:
    """Counts and slices text in a Hugging Face tokenizer's tokens (no special tokens)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def offsets(self, text: str) -> list[tuple[int, int]]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [tuple(o) for o in enc["offset_mapping"]]


def split_blocks(text: str) -> list[str]:
    """Paragraphs separated by blank lines; a heading is glued to the block after it."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    blocks: list[str] = []
    pending_heading = ""
    for para in paragraphs:
        is_heading_only = HEADING.match(para) and "\n" not in para
        if is_heading_only:
            pending_heading = f"{pending_heading}\n\n{para}" if pending_heading else para
            continue
        blocks.append(f"{pending_heading}\n\n{para}" if pending_heading else para)
        pending_heading = ""
    if pending_heading:
        blocks.append(pending_heading)
    return blocks


def word_start(text: str, offsets, i: int) -> bool:
    return offsets[i][0] == 0 or text[offsets[i][0] - 1].isspace()


def token_windows(text: str, counter: TokenCounter, size: int, overlap: int) -> list[str]:
    """Cut text into windows of at most `size` tokens, neighbours sharing up to `overlap` tokens.

    Windows start and end on word boundaries whenever a word is shorter than a window.
    """
    offsets = counter.offsets(text)
    if len(offsets) <= size:
        return [text]
    windows = []
    start = 0
    while start < len(offsets):
        end = min(start + size, len(offsets))
        if end < len(offsets):
            cut = end
            while cut > start + 1 and not word_start(text, offsets, cut):
                cut -= 1  # do not end inside a word
            end = cut if cut > start + 1 else end
        windows.append(text[offsets[start][0] : offsets[end - 1][1]])
        if end == len(offsets):
            break
        nxt = max(end - overlap, start + 1)
        while nxt < end and not word_start(text, offsets, nxt):
            nxt += 1  # do not start inside a word
        start = nxt
    return windows


def tail_tokens(text: str, counter: TokenCounter, n: int) -> str:
    if n <= 0:
        return ""
    offsets = counter.offsets(text)
    i = max(len(offsets) - n, 0)
    while i < len(offsets) and offsets[i][0] > 0 and not text[offsets[i][0] - 1].isspace():
        i += 1  # start on a word boundary, never inside a word
    return text[offsets[i][0] :] if i < len(offsets) else ""


def chunk_text(text: str, counter: TokenCounter, size: int, overlap: int) -> list[str]:
    """Greedy packing of blocks into chunks of at most `size` tokens."""
    if overlap >= size:
        raise ValueError(f"chunk overlap ({overlap}) must be smaller than chunk size ({size})")
    pieces: list[tuple[str, int, bool]] = []  # (text, tokens, continues the window before)
    for block in split_blocks(text):
        for i, window in enumerate(token_windows(block, counter, size, overlap)):
            pieces.append((window, counter.count(window), i > 0))

    chunks: list[str] = []
    current: list[str] = []
    current_tokens = 0
    for piece, n, continues in pieces:
        if current and current_tokens + n <= size:
            current.append(piece)
            current_tokens += n
            continue
        if current:
            chunks.append("\n\n".join(current))
            # Carry the end of the previous chunk so a sentence cut at the border is seen whole once.
            # A window that continues a long paragraph already overlaps the one before it.
            carry = "" if continues else tail_tokens(chunks[-1], counter, min(overlap, size - n))
            carry_n = counter.count(carry) if carry else 0
            current, current_tokens = ([carry], carry_n) if carry and carry_n + n <= size else ([], 0)
        current.append(piece)
        current_tokens += n
    if current:
        chunks.append("\n\n".join(current))
    return chunks


def make_chunk_id(doc_id: str, title: str, acl: tuple[str, ...], text: str, occurrence: int) -> str:
    payload = json.dumps([doc_id, title, list(acl), text, occurrence], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def chunk_document(doc: Document, counter: TokenCounter, size: int, overlap: int) -> list[Chunk]:
    acl = tuple(doc.acl)
    seen: dict[str, int] = {}
    chunks = []
    for position, text in enumerate(chunk_text(doc.text, counter, size, overlap)):
        occurrence = seen.get(text, 0)
        seen[text] = occurrence + 1
        chunks.append(
            Chunk(
                chunk_id=make_chunk_id(doc.doc_id, doc.title, acl, text, occurrence),
                doc_id=doc.doc_id,
                title=doc.title,
                text=text,
                position=position,
                n_tokens=counter.count(text),
                acl=acl,
                source=str(doc.metadata.get("source", doc.doc_id)),
                doc_hash=doc.content_hash,
            )
        )
    return chunks
