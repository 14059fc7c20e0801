"""PII detection, masking, the PII tagger's spans and its rules (too many spans, masking)."""
import pytest

from steps.corpus.config import ConfigError
from steps.corpus.pii import PiiRules, PiiTagging, find_pii, mask_pii, pii_edits, pii_flags, tag_pii
from steps.corpus.spans import apply_edits

MIXED = "Contact jane.doe@example.com or call (555) 123-4567 from 192.168.1.20 today."
MIXED_MASKED = "Contact  |||EMAIL_ADDRESS|||  or call  |||PHONE_NUMBER|||  from  |||IP_ADDRESS|||  today."


def pii_attributes(text):
    return tag_pii([text], PiiTagging())[0]


def test_masks_email_phone_and_ip_exactly():
    assert mask_pii(MIXED) == (MIXED_MASKED, 3)


@pytest.mark.parametrize("phone", ["555-123-4567", "555.123.4567", "(555) 123-4567", "+1 555 123 4567"])
def test_phone_formats(phone):
    assert [kind for _, _, kind in find_pii(f"Call {phone} now.")] == ["phone_number"]


@pytest.mark.parametrize(
    "text",
    [
        "Version 1.2.3.4.5 of the tool.",  # five parts: not an address
        "Port 300.1.2.3 is not an IP.",  # octet above 255
        "Order 12345678901234 shipped.",  # long number, no separators
        "Write to us @ the office.",
    ],
)
def test_non_pii_left_alone(text):
    assert mask_pii(text) == (text, 0)


@pytest.mark.parametrize(
    "text", ["ISBN 555-123-4567", "isbn: 555-123-4567", "doi 10.12.13.14", "see #555-123-4567", "ref #10.1.2.3"]
)
def test_reference_numbers_are_not_pii(text):
    assert find_pii(text) == []


def test_doi_must_be_a_word():
    assert [kind for _, _, kind in find_pii("I was doing 555-123-4567")] == ["phone_number"]


def test_tagged_spans_index_the_original_text():
    attributes = pii_attributes(MIXED)
    assert {kind: [MIXED[s:e] for s, e, _ in spans] for kind, spans in attributes.items() if kind != "span_count"} == {
        "email_address": ["jane.doe@example.com"],
        "phone_number": ["(555) 123-4567"],
        "ip_address": ["192.168.1.20"],
    }
    assert attributes["span_count"] == [[0, len(MIXED), 3]]


def test_masking_from_the_attributes_equals_masking_the_text():
    attributes = pii_attributes(MIXED)
    assert pii_flags(attributes, PiiRules(), MIXED) == []
    assert apply_edits(MIXED, pii_edits(attributes, PiiRules(), MIXED)) == (MIXED_MASKED, 3)
    assert not pii_edits(attributes, PiiRules(mask=False), MIXED)


def test_more_than_max_spans_removes_the_document():
    five = " ".join(f"user{i}@example.com" for i in range(5))
    six = five + " 10.0.0.1"
    assert pii_flags(pii_attributes(five), PiiRules(), five) == []
    attributes = pii_attributes(six)
    assert pii_flags(attributes, PiiRules(), six) == ["pii_too_many_spans"]
    assert attributes["span_count"] == [[0, len(six), 6]]
    assert [six[s:e] for s, e, _ in attributes["ip_address"]] == ["10.0.0.1"]
    assert pii_flags(attributes, PiiRules(max_spans=6), six) == []
    assert pii_flags(pii_attributes("No PII here."), PiiRules(max_spans=0), "No PII here.") == []
    assert pii_flags(pii_attributes("a@b.io"), PiiRules(max_spans=0), "a@b.io") == ["pii_too_many_spans"]


def test_negative_max_spans_is_a_config_error():
    with pytest.raises(ConfigError, match=r"filter\.pii\.max_spans: expected a non-negative integer"):
        PiiRules(max_spans=-1)


def test_pii_tagger_applies_to_every_source_by_default():
    assert PiiTagging().applies("web") and PiiTagging().applies("python-code")
    assert not PiiTagging(sources=("web",)).applies("python-code")
