"""Load a folder of documents (.md .txt .html .pdf .jsonl) into `Document`s.

Every file either becomes documents or is reported in `LoadResult.skipped` with a
reason a person can act on; one bad file never stops the others. A missing source
folder is an error, because an empty result would delete the whole index.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import frontmatter
from bs4 import BeautifulSoup

from ragtune.jsonl import parse_lines

SUPPORTED_SUFFIXES = (".md", ".txt", ".html", ".htm", ".pdf", ".jsonl")
TEXT_FALLBACK_ENCODINGS = ("cp1252", "latin-1")  # tried in order when a file is not UTF-8


class SourceError(RuntimeError):
    """The source folder itself is unusable (missing, not a folder)."""


class SkipFile(Exception):
    """Raised inside a loader: this file (or line) is skipped for the given reason."""


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    text: str
    content_hash: str  # sha256 of the text
    metadata: dict = field(default_factory=dict)

    @property
    def acl(self) -> list[str]:
        return list(self.metadata.get("acl", []))


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str
    # Documents we failed to read keep their indexed chunks; duplicates do not.
    keep_indexed: bool = True


@dataclass
class LoadResult:
    documents: list[Document] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # kept, but worth knowing (e.g. encoding fallback)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def normalize_acl(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)):
        raise SkipFile(f"acl must be a list of group names, got {type(value).__name__}")
    return sorted({str(g).strip() for g in value if str(g).strip()})


def decode_text(raw: bytes, rel: str, notes: list[str]) -> str:
    """UTF-8 first; otherwise the stated fallbacks, with a note naming the one used."""
    if not raw.strip():
        raise SkipFile("empty file")
    if b"\x00" in raw[:8192]:
        raise SkipFile("binary content behind a text extension (NUL bytes)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    for encoding in TEXT_FALLBACK_ENCODINGS:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        notes.append(f"{rel}: not valid UTF-8, decoded as {encoding}")
        return text
    raise SkipFile("undecodable text")  # latin-1 never fails; kept for clarity


def control_char_share(text: str) -> float:
    sample = text[:8192]
    bad = sum(1 for c in sample if ord(c) < 32 and c not in "\n\r\t\f")
    return bad / max(len(sample), 1)


def title_from_markdown(text: str, fallback: str) -> str:
    match = re.search(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.MULTILINE)
    return match.group(1).strip() if match else fallback


def make_document(doc_id: str, title: str, text: str, metadata: dict) -> Document:
    text = text.strip()
    if not text:
        raise SkipFile("no text after parsing")
    metadata = dict(metadata)
    metadata["acl"] = normalize_acl(metadata.get("acl"))
    return Document(doc_id=doc_id, title=title.strip() or doc_id, text=text, content_hash=sha256_text(text), metadata=metadata)


def load_markdown_or_text(raw: bytes, rel: str, notes: list[str]) -> list[Document]:
    text = decode_text(raw, rel, notes)
    if control_char_share(text) > 0.05:
        raise SkipFile("binary content behind a text extension (control characters)")
    try:
        post = frontmatter.loads(text)
    except Exception as exc:  # yaml errors come in several types
        raise SkipFile(f"malformed front matter: {exc}") from exc
    meta = dict(post.metadata)
    doc_id = str(meta.pop("id", "") or rel)
    title = str(meta.pop("title", "") or title_from_markdown(post.content, Path(rel).stem))
    meta["source"] = rel
    return [make_document(doc_id, title, post.content, meta)]


def html_to_text(html: str) -> tuple[str, str, dict]:
    """HTML -> (title, text with Markdown-style headings, metadata from <meta>)."""
    soup = BeautifulSoup(html, "lxml")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    meta = {}
    for m in soup.find_all("meta"):
        if m.get("name") in ("acl", "id") and m.get("content"):
            meta[m["name"]] = m["content"]
    title = soup.title.get_text(strip=True) if soup.title else ""
    for level in range(1, 7):
        for h in soup.find_all(f"h{level}"):
            h.insert_before(f"\n\n{'#' * level} ")
            h.insert_after("\n\n")
    for block in soup.find_all(["p", "li", "pre", "tr", "br", "div", "section", "article"]):
        block.insert_after("\n\n" if block.name in ("p", "pre", "div", "section", "article") else "\n")
    body = soup.body or soup
    text = re.sub(r"[ \t]+\n", "\n", body.get_text())
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return title, text, meta


def load_html(raw: bytes, rel: str, notes: list[str]) -> list[Document]:
    html = decode_text(raw, rel, notes)
    if control_char_share(html) > 0.05:
        raise SkipFile("binary content behind a text extension (control characters)")
    title, text, meta = html_to_text(html)
    doc_id = str(meta.pop("id", "") or rel)
    meta["source"] = rel
    return [make_document(doc_id, title or title_from_markdown(text, Path(rel).stem), text, meta)]


def load_pdf(raw: bytes, rel: str, notes: list[str]) -> list[Document]:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    if not raw:
        raise SkipFile("empty file")
    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted and not reader.decrypt(""):
            raise SkipFile("encrypted PDF (needs a password)")
        pages = [page.extract_text() or "" for page in reader.pages]
        info_title = (reader.metadata or {}).get("/Title") if reader.metadata else None
    except SkipFile:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise SkipFile(f"corrupt PDF: {exc}") from exc
    except Exception as exc:  # pypdf raises assorted errors on damaged files
        if "decrypt" in str(exc).lower() or "crypt" in type(exc).__name__.lower():
            raise SkipFile(f"encrypted PDF: {exc}") from exc
        raise SkipFile(f"corrupt PDF: {type(exc).__name__}: {exc}") from exc
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise SkipFile("PDF has no extractable text (scanned image?)")
    title = str(info_title or title_from_markdown(text, Path(rel).stem))
    return [make_document(rel, title, text, {"source": rel, "pages": len(pages)})]


def load_jsonl(raw: bytes, rel: str, notes: list[str], skipped: list[Skipped]) -> list[Document]:
    """One document a line: id, title, text, optional metadata. Bad lines are skipped alone."""
    text = decode_text(raw, rel, notes)
    docs = []
    for lineno, row, problem in parse_lines(text):
        where = f"{rel}:{lineno}"
        try:
            if problem:
                raise SkipFile(problem)
            missing = [k for k in ("id", "text") if not isinstance(row.get(k), str) or not row.get(k).strip()]
            if missing:
                raise SkipFile(f"missing or empty field(s): {', '.join(missing)}")
            meta = row.get("metadata") or {}
            if not isinstance(meta, dict):
                raise SkipFile("metadata must be an object")
            meta = {**meta, "source": where}
            docs.append(make_document(row["id"], str(row.get("title") or row["id"]), row["text"], meta))
        except SkipFile as exc:
            skipped.append(Skipped(where, str(exc), keep_indexed=False))
    if not docs and not any(s.path.startswith(f"{rel}:") for s in skipped):
        raise SkipFile("no documents in file")
    return docs


def iter_source_files(root: Path):
    """Yield (path, rel) for every non-hidden entry below root, in a stable order."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(dirpath)
        # A symlinked directory is listed in dirnames but never walked; report it like a file.
        entries = filenames + [d for d in dirnames if (base / d).is_symlink()]
        for name in sorted(entries):
            if name.startswith("."):
                continue
            path = base / name
            yield path, path.relative_to(root).as_posix()


def read_checked(path: Path, root: Path, max_bytes: int) -> bytes:
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(root):
            raise SkipFile(f"symlink leads outside the source folder (to {target})")
    if not path.exists():
        raise SkipFile("unreadable: broken link or file vanished")
    if not path.is_file():
        raise SkipFile("not a regular file")
    size = path.stat().st_size
    if size > max_bytes:
        raise SkipFile(f"file too large: {size} bytes > limit {max_bytes}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SkipFile(f"unreadable: {exc.strerror or exc}") from exc


def load_documents(source: Path | str, max_bytes: int = 10 * 1024 * 1024) -> LoadResult:
    root = Path(source).expanduser()
    if not root.exists():
        raise SourceError(f"source folder does not exist: {root}")
    if not root.is_dir():
        raise SourceError(f"source is not a folder: {root}")
    root = root.resolve()
    result = LoadResult()
    seen_hash: dict[str, str] = {}
    seen_id: dict[str, str] = {}
    for path, rel in iter_source_files(root):
        suffix = path.suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            result.skipped.append(Skipped(rel, f"unsupported file type '{suffix or 'none'}'", keep_indexed=False))
            continue
        try:
            raw = read_checked(path, root, max_bytes)
            if suffix == ".pdf":
                docs = load_pdf(raw, rel, result.notes)
            elif suffix == ".jsonl":
                docs = load_jsonl(raw, rel, result.notes, result.skipped)
            elif suffix in (".html", ".htm"):
                docs = load_html(raw, rel, result.notes)
            else:
                docs = load_markdown_or_text(raw, rel, result.notes)
        except SkipFile as exc:
            result.skipped.append(Skipped(rel, str(exc)))
            continue
        for doc in docs:
            where = doc.metadata.get("source", rel)
            if doc.content_hash in seen_hash:
                result.skipped.append(
                    Skipped(where, f"same content as {seen_hash[doc.content_hash]} (indexed once)", keep_indexed=False)
                )
            elif doc.doc_id in seen_id:
                result.skipped.append(
                    Skipped(where, f"duplicate document id '{doc.doc_id}' (first in {seen_id[doc.doc_id]})", keep_indexed=False)
                )
            else:
                seen_hash[doc.content_hash] = where
                seen_id[doc.doc_id] = where
                result.documents.append(doc)
    return result
