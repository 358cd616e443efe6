"""Find and scrub personal data and secrets with Microsoft Presidio's recognizers.

Presidio's pattern and validation recognizers (e-mail, phone via the
`phonenumbers` library, Luhn-checked payment cards, US SSNs, IPv4/IPv6, IBANs
with their checksum) run directly, without the spaCy NER engine: structured
identifiers do not need a language model, and no model has to be downloaded.
API keys and bearer tokens are two more Presidio `PatternRecognizer`s defined
here. Each finding is replaced by a typed placeholder such as `<EMAIL_ADDRESS>`.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

# tldextract (used by Presidio's e-mail recognizer) would fetch the public suffix list from
# the internet; an empty URL list makes it use the snapshot it ships with.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

KINDS = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IP_ADDRESS", "IBAN_CODE", "API_KEY", "BEARER_TOKEN")
NUMERIC_KINDS = {"PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE"}
MIN_SCORE = 0.4  # Presidio's "medium" patterns and up; the very weak ones (any 9 digits) are noise without context

EMAIL_ANY_DOMAIN = r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
API_KEY_PATTERNS = [
    ("openai/stripe style", r"\b(?:sk|rk|pk)-(?:proj-|live-|test-)?[A-Za-z0-9_\-]{20,}"),
    ("aws access key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("github token", r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    ("github fine-grained token", r"\bgithub_pat_[A-Za-z0-9_]{50,}"),
    ("hugging face token", r"\bhf_[A-Za-z0-9]{30,}\b"),
    ("slack token", r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"),
    ("google api key", r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    # The name may end an env var (WANDB_API_KEY=...) or a subscript (os.environ["X_API_KEY"] = "...").
    (
        "assigned secret",
        r"(?i)(?<=(?:\b|_)(?:api[_-]?key|secret[_-]?key|access[_-]?token|client[_-]?secret)[\"']?\]?\s*[:=]\s*[\"']?)[A-Za-z0-9_\-\.]{16,}",
    ),
]
# Presidio's card pattern with Mastercard's 2221-2720 range (in use since 2017) added; Luhn still decides.
CREDIT_CARD_PATTERN = (
    r"\b(?!1\d{12}(?!\d))((4\d{3})|(5[0-5]\d{2})|(2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720))|(6\d{3})|(1\d{3})|(3\d{3}))"
    r"[- ]?(\d{3,4})[- ]?(\d{3,4})[- ]?(\d{3,5})\b"
)
BEARER_PATTERNS = [
    ("authorization bearer", r"(?i)(?<=\bbearer\s+)[A-Za-z0-9\-\._~\+/]{16,}=*"),
    ("json web token", r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
]


# Any SSN-shaped number, even one Presidio rejects as a published sample (123-45-6789, 078-05-1120): in
# training data a missed number costs more than a redacted one.
SSN_SHAPED = [("ssn-shaped number", r"(?<![\w/-])\d{3}-\d{2}-\d{4}(?![\w/-])")]
# The independent residue check: plain patterns, written apart from the recognizers above, that no scrubbed
# text may still match (what curation quarantines and the blocking asset check enforces).
RESIDUE_PATTERNS = {
    "EMAIL_ADDRESS": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    "US_SSN": SSN_SHAPED[0][1],
    "BEARER_TOKEN": r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{16,}",
    "API_KEY": r"\b(?:sk-[A-Za-z0-9_\-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|hf_[A-Za-z0-9]{30,})",
}


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int
    score: float


def placeholder(kind: str) -> str:
    return f"<{kind}>"


@lru_cache(maxsize=1)
def recognizers() -> tuple:
    from presidio_analyzer import Pattern, PatternRecognizer
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    def custom(kind: str, patterns: list[tuple[str, str]]) -> PatternRecognizer:
        return PatternRecognizer(supported_entity=kind, patterns=[Pattern(name, regex, 0.9) for name, regex in patterns])

    # Presidio's e-mail recognizer wants a public suffix; intranet addresses (ops@corp.local) are PII too.
    any_domain_email = custom("EMAIL_ADDRESS", [("any-domain e-mail", EMAIL_ANY_DOMAIN)])
    return (
        EmailRecognizer(),
        any_domain_email,
        PhoneRecognizer(),
        CreditCardRecognizer(patterns=[Pattern("All Credit Cards (weak)", CREDIT_CARD_PATTERN, 0.3)]),
        UsSsnRecognizer(),
        custom("US_SSN", SSN_SHAPED),
        IpRecognizer(),
        IbanRecognizer(),
        custom("API_KEY", API_KEY_PATTERNS),
        custom("BEARER_TOKEN", BEARER_PATTERNS),
    )


def inside_identifier(text: str, start: int, end: int) -> bool:
    """Digits glued to a word, path or id (`demo-1659958764`, `v2/12345678`) are not a number on their own."""
    before = text[start - 1] if start > 0 else " "
    after = text[end] if end < len(text) else " "
    return before.isalnum() or before in "-_/.\\" or after.isalnum() or after in "-_/\\"


def find_pii(text: str) -> list[Finding]:
    """Non-overlapping findings, best first where two overlap (higher score, then longer span)."""
    found = []
    for recognizer in recognizers():
        for r in recognizer.analyze(text, recognizer.supported_entities, None):
            if r.entity_type in NUMERIC_KINDS and inside_identifier(text, r.start, r.end):
                continue
            if r.entity_type == "PHONE_NUMBER" and "/" in text[r.start : r.end]:  # "step 17404/49562" is progress, not a phone
                continue
            if r.score >= MIN_SCORE and r.entity_type in KINDS:
                found.append(Finding(r.entity_type, r.start, r.end, r.score))
    kept: list[Finding] = []
    for f in sorted(found, key=lambda f: (-f.score, -(f.end - f.start), f.start)):
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


def scrub(text: str) -> tuple[str, Counter]:
    """`text` with every finding replaced by its placeholder, and how many of each kind."""
    if not text:
        return text, Counter()
    findings = find_pii(text)
    for f in reversed(findings):
        text = text[: f.start] + placeholder(f.kind) + text[f.end :]
    return text, Counter(f.kind for f in findings)


def residue(text: str, recognizers_too: bool = True) -> list[str]:
    """The PII kinds still in (already scrubbed) `text`, by the independent patterns and (unless told not to)
    by the recognizers again."""
    import re

    kinds = {kind for kind, pattern in RESIDUE_PATTERNS.items() if re.search(pattern, text or "")}
    return sorted(kinds | ({f.kind for f in find_pii(text or "")} if recognizers_too else set()))
