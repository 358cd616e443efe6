"""Loaders: every bad input is skipped with its reason; the good files still load."""

import json
import os

import pytest

from ragtune.knowledge.documents import SourceError, load_documents


def make_pdf(text: str) -> bytes:
    """A minimal one-page PDF with real text content."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def encrypted_pdf() -> bytes:
    import io

    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(612, 792)
    writer.encrypt(user_password="secret", owner_password="owner")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


@pytest.fixture()
def messy(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "good.md").write_text("---\ntitle: Good\nacl: [staff, ops]\n---\n# Heading\n\nBody text.\n")
    (src / "sub" / "page.html").write_text(
        "<html><head><title>Page</title><script>evil()</script></head><body><h2>Sec</h2><p>Hello <b>web</b>.</p></body></html>"
    )
    (src / "good.pdf").write_bytes(make_pdf("Quarterly revenue grew"))
    (src / "empty.md").write_text("")
    (src / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR" * 10)
    (src / "corrupt.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    (src / "locked.pdf").write_bytes(encrypted_pdf())
    (src / "latin.txt").write_bytes("Caf\xe9 cr\xe8me br\xfbl\xe9e".encode("cp1252"))
    (src / "huge.txt").write_text("x " * 3000)
    outside = tmp_path / "outside.md"
    outside.write_text("secret outside the source")
    os.symlink(outside, src / "escape.md")
    os.symlink(src / "missing.md", src / "dangling.md")
    (src / "z_copy.md").write_text("---\ntitle: Good\nacl: [staff, ops]\n---\n# Heading\n\nBody text.\n")
    (src / "docs.jsonl").write_text(
        json.dumps({"id": "j1", "title": "J one", "text": "first", "metadata": {"acl": ["hr"]}})
        + "\n"
        + "{not json\n"
        + json.dumps({"id": "j2", "text": ""})
        + "\n"
        + json.dumps({"id": "j3", "title": "J three", "text": "third"})
        + "\n"
    )
    (src / "notes.docx").write_bytes(b"PK\x03\x04")
    return src


def reasons(result) -> dict:
    return {s.path: s.reason for s in result.skipped}


def test_good_files_load_with_ids_titles_hashes_and_acl(messy):
    result = load_documents(messy, max_bytes=4096)
    docs = {d.doc_id: d for d in result.documents}
    assert set(docs) == {"good.md", "sub/page.html", "good.pdf", "latin.txt", "j1", "j3"}
    assert docs["good.md"].title == "Good" and docs["good.md"].acl == ["ops", "staff"]
    assert "evil" not in docs["sub/page.html"].text and "## Sec" in docs["sub/page.html"].text
    assert docs["sub/page.html"].title == "Page"
    assert "Quarterly revenue grew" in docs["good.pdf"].text
    assert docs["j1"].acl == ["hr"] and docs["j3"].title == "J three"
    assert len(docs["good.md"].content_hash) == 64


def test_non_utf8_text_is_decoded_with_the_stated_fallback(messy):
    result = load_documents(messy, max_bytes=4096)
    latin = next(d for d in result.documents if d.doc_id == "latin.txt")
    assert latin.text == "Café crème brûlée"
    assert any("latin.txt" in n and "cp1252" in n for n in result.notes)


@pytest.mark.parametrize(
    "path, reason",
    [
        ("empty.md", "empty file"),
        ("binary.txt", "binary content"),
        ("corrupt.pdf", "corrupt PDF"),
        ("locked.pdf", "encrypted PDF"),
        ("huge.txt", "file too large"),
        ("escape.md", "symlink leads outside the source folder"),
        ("dangling.md", "unreadable"),
        ("z_copy.md", "same content as good.md"),
        ("docs.jsonl:2", "malformed JSON ("),
        ("docs.jsonl:3", "missing or empty field(s): text"),
        ("notes.docx", "unsupported file type"),
    ],
)
def test_each_bad_input_is_skipped_with_its_reason(messy, path, reason):
    got = reasons(load_documents(messy, max_bytes=4096))
    assert path in got, f"{path} not reported; skipped: {got}"
    assert reason in got[path]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_skipped(tmp_path):
    (tmp_path / "ok.md").write_text("fine")
    locked = tmp_path / "locked.md"
    locked.write_text("private")
    locked.chmod(0)
    try:
        assert "unreadable" in reasons(load_documents(tmp_path))["locked.md"]
    finally:
        locked.chmod(0o644)


def test_missing_source_folder_is_an_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        load_documents(tmp_path / "nope")


def test_loading_is_deterministic(messy):
    a, b = load_documents(messy, 4096), load_documents(messy, 4096)
    assert [d.doc_id for d in a.documents] == [d.doc_id for d in b.documents]
    assert reasons(a) == reasons(b)
