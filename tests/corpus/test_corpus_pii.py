"""PII detection, masking and the too-many-spans rule."""
import pytest

from steps.corpus.pii import PiiConfig, find_pii, mask_pii, tag_pii


def test_masks_email_phone_and_ip_exactly():
    text = "Contact jane.doe@example.com or call (555) 123-4567 from 192.168.1.20 today."
    masked, count = mask_pii(text)
    assert masked == (
        "Contact  |||EMAIL_ADDRESS|||  or call  |||PHONE_NUMBER|||  from  |||IP_ADDRESS|||  today."
    )
    assert count == 3


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


def test_more_than_max_spans_removes_the_document():
    five = " ".join(f"user{i}@example.com" for i in range(5))
    six = five + " 10.0.0.1"
    assert tag_pii(five, PiiConfig()).flagged == []
    tagging = tag_pii(six, PiiConfig())
    assert tagging.flagged == ["pii_too_many_spans"]
    assert tagging.attributes["span_count"] == [[0, len(six), 6]]
    assert [six[s:e] for s, e, _ in tagging.attributes["ip_address"]] == ["10.0.0.1"]
    assert tag_pii(six, PiiConfig(max_spans=6)).flagged == []
