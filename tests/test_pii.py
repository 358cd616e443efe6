"""PII scrubber on the seeded synthetic set: every positive caught with its kind, negatives untouched, text around findings intact."""

import ipaddress
import random
import re
from collections import Counter

import phonenumbers
import pytest

from ragtune.behaviour.pii import KINDS, find_pii, placeholder, scrub
from tests.pii_samples import NATIONAL_REGIONS, NEGATIVE_FAMILIES, iban_valid, labelled_samples, luhn_valid, negative

SAMPLES = labelled_samples(seed=0, per_kind=25)
POSITIVES = [s for s in SAMPLES if len(s.spans) == 1]
MIXED = [s for s in SAMPLES if len(s.spans) > 1]


def overlaps(finding, start, end):
    return finding.start < end and start < finding.end


def rebuild(text, findings):
    """What scrubbing should give: text outside the findings kept verbatim, each finding one placeholder."""
    out, at = [], 0
    for f in findings:
        out += [text[at : f.start], placeholder(f.kind)]
        at = f.end
    return "".join(out) + text[at:]


def test_the_set_is_deterministic_and_every_value_is_genuinely_valid():
    assert [s.text for s in labelled_samples(seed=0, per_kind=25)] == [s.text for s in SAMPLES]
    assert [s.text for s in labelled_samples(seed=1, per_kind=25)] != [s.text for s in SAMPLES]
    assert Counter(s.spans[0][0] for s in POSITIVES) == {kind: 25 for kind in KINDS}
    for sample in SAMPLES:
        for kind, value in sample.values():
            if kind == "CREDIT_CARD":
                assert luhn_valid(re.sub(r"[ -]", "", value)), value
            elif kind == "IBAN_CODE":
                assert iban_valid(value), value
            elif kind == "PHONE_NUMBER":
                assert any(phonenumbers.is_valid_number(phonenumbers.parse(value, region)) for region in set(NATIONAL_REGIONS)), (
                    value
                )
            elif kind == "US_SSN":
                area, group, serial = value.split("-")
                assert len(area) == 3 and len(group) == 2 and len(serial) == 4
                assert area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000", value
            elif kind == "IP_ADDRESS":
                ipaddress.ip_interface(value.split("%")[0])


@pytest.mark.parametrize("kind", KINDS)
def test_every_positive_is_caught_with_its_kind_and_replaced(kind):
    samples = [s for s in POSITIVES if s.spans[0][0] == kind]
    assert len(samples) == 25
    for sample in samples:
        (_, start, end), value = sample.spans[0], sample.text[sample.spans[0][1] : sample.spans[0][2]]
        findings = find_pii(sample.text)
        assert any(f.kind == kind and overlaps(f, start, end) for f in findings), (sample.variant, sample.text, findings)
        clean, counts = scrub(sample.text)
        assert placeholder(kind) in clean and value not in clean, (sample.variant, clean)
        assert counts == Counter({kind: 1}), (sample.variant, sample.text, counts)
        assert find_pii(clean) == [], clean  # placeholders are not findings themselves: scrubbing is idempotent


def test_negatives_come_back_unchanged():
    negatives = [s for s in SAMPLES if not s.spans]
    assert negatives
    rng = random.Random(0)  # and three more of every family, so each shape of near miss is covered
    negatives += [negative(rng, family) for family in NEGATIVE_FAMILIES for _ in range(3)]
    for sample in negatives:
        assert find_pii(sample.text) == [], (sample.variant, sample.text)
        assert scrub(sample.text) == (sample.text, Counter()), sample.text


def test_training_progress_fractions_are_not_phone_numbers():
    rng = random.Random(0)
    assert all(find_pii(negative(rng, "step-fraction").text) == [] for _ in range(20))


def test_adjacent_findings_of_several_kinds_keep_the_text_around_them():
    assert len(MIXED) == 6
    for sample in MIXED:
        findings = find_pii(sample.text)
        assert all(a.end <= b.start for a, b in zip(findings, findings[1:]))  # sorted, never overlapping
        clean, counts = scrub(sample.text)
        assert clean == rebuild(sample.text, findings)
        assert counts == Counter(kind for kind, _, _ in sample.spans), (sample.text, findings)
        for kind, start, end in sample.spans:
            assert any(f.kind == kind and overlaps(f, start, end) for f in findings), (kind, sample.text)
            assert sample.text[start:end] not in clean


def test_touching_and_overlapping_matches():
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    # both bearer patterns match the same JWT, and the assigned-secret pattern overlaps it too: one placeholder, nothing else moves
    text = f"curl -H 'Authorization: Bearer {jwt}' && echo access_token={jwt}!"
    clean, counts = scrub(text)
    assert jwt not in clean and sum(counts.values()) == 2
    assert re.fullmatch(
        r"curl -H 'Authorization: Bearer <(BEARER_TOKEN)>' && echo access_token=<(API_KEY|BEARER_TOKEN)>!", clean
    ), clean
    # values separated by a single punctuation mark or newline
    text = "jane@example.com,10.0.0.7;+44 20 7946 0958\nDE89370400440532013000|536-22-1234"
    clean, counts = scrub(text)
    assert clean == "<EMAIL_ADDRESS>,<IP_ADDRESS>;<PHONE_NUMBER>\n<IBAN_CODE>|<US_SSN>"
    assert counts == Counter(EMAIL_ADDRESS=1, IP_ADDRESS=1, PHONE_NUMBER=1, IBAN_CODE=1, US_SSN=1)


def test_counts_add_up_per_kind():
    text = "mail a@example.com and b.c@example.org, cards 4111 1111 1111 1111 / 5500-0000-0000-0004, host 192.168.1.20"
    clean, counts = scrub(text)
    assert counts == Counter(EMAIL_ADDRESS=2, CREDIT_CARD=2, IP_ADDRESS=1)
    assert clean == "mail <EMAIL_ADDRESS> and <EMAIL_ADDRESS>, cards <CREDIT_CARD> / <CREDIT_CARD>, host <IP_ADDRESS>"
    assert scrub("") == ("", Counter())
    assert scrub("nothing to see here") == ("nothing to see here", Counter())
