"""PII detection, masking, the PII tagger's spans and its rules (too many spans, masking), under both rule
sets: 'dolma_v1_fixed' (the default) and 'dolma_v1' (dolma 1.2.1's pii_regex_v1, span for span)."""
import json
import random
import re
import subprocess
import time
from pathlib import Path

import pytest

from olmo_model.config import ConfigError
from steps.corpus.pii import (
    MASKS, PII_RULE_SETS, PiiRules, PiiTagging, _v1_email_matches, find_pii, mask_pii, pii_edits, pii_flags, tag_pii,
)
from steps.corpus.spans import apply_edits
from steps.corpus.taggers import TagConfig

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
        "Importing vendor version xf86-012804-2330",  # no phone number without separators between its groups
        "report.20181126.091102.8480.0.001.json",
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


# --- dolma_v1_fixed (the default): what dolma and this project's first version each got wrong ---

def spans_of(text, rules="dolma_v1_fixed"):
    return [(text[s:e], kind) for s, e, kind in find_pii(text, rules)]


@pytest.mark.parametrize("text, address", [
    ("Write to o'brien@bücher.de today.", "o'brien@bücher.de"),  # non-ASCII domain, apostrophe in the local part
    ("Write to 'jane@example.com' today.", "jane@example.com"),  # quotes around it stay outside
    ("Write to user@пример.рф today.", "user@пример.рф"),
    ("Write to user@xn--e1afmkfd.xn--p1ai today.", "user@xn--e1afmkfd.xn--p1ai"),
    ("Write to (jane@example.com).", "jane@example.com"),  # dolma misses it: no whitespace after
    ("Write to jane@example.com", "jane@example.com"),  # nor at the end of the text
    ("mail john@192.168.0.1 now", "john@192.168.0.1"),  # one e-mail address, not an IP address
    ("mail john@[192.168.0.1] now", "john@[192.168.0.1]"),
])
def test_email_addresses_dolma_or_our_first_version_missed(text, address):
    assert spans_of(text) == [(address, "email_address")]
    assert mask_pii(text)[0] == text.replace(address, MASKS["email_address"])


@pytest.mark.parametrize("text", [
    "Quote '@'. in prose",
    "Use ``@dataclasses.dataclass``. here",
    "hash 1234567890abcdef and 12345678901234",  # bare 10-digit runs are no phone numbers
    "ver 1.2.3.4.5 and 300.1.2.3 and 192.168.1.256",  # no part of a longer dotted number is an IP address
])
def test_dolmas_false_positives_are_not_pii(text):
    assert spans_of(text) == [] and spans_of(text, "dolma_v1") != []


@pytest.mark.parametrize("context, pii", [
    ("#" + "x" * 90 + " {}", False),  # dolma's window: 100 characters, not 12
    ("{} " + "x" * 90 + " #", False),  # on either side
    ("#" + "x" * 100 + " {}", True),
    ("DOI " + "x" * 80 + " {}", False),  # any case
    ("ISBN {}", False),
    ("unless you know what you are doing {}", True),  # "doi" as a word only
])
def test_reference_number_context_is_dolmas_window_on_both_sides(context, pii):
    for number, kind in (("555-123-4567", "phone_number"), ("10.0.0.1", "ip_address")):
        text = context.format(number)
        assert spans_of(text) == ([(number, kind)] if pii else [])


def test_the_rules_are_validated_with_one_line_naming_the_key_and_the_choices():
    expected = "tag.pii.rules: expected one of 'dolma_v1_fixed', 'dolma_v1', got 'dolma'"
    with pytest.raises(ConfigError) as raised:
        TagConfig.from_dict({"pii": {"rules": "dolma"}})
    assert str(raised.value) == expected
    with pytest.raises(ConfigError, match=re.escape(expected)):
        PiiTagging(rules="dolma")
    assert PiiTagging().rules == "dolma_v1_fixed"
    assert TagConfig.from_dict({"pii": {"rules": "dolma_v1"}}).pii.rules == "dolma_v1"


def test_the_rules_are_in_the_tag_steps_fingerprint():
    from steps.corpus.steps import TagDocuments

    default, v1 = (TagDocuments(sources=[], config=config) for config in ({}, {"pii": {"rules": "dolma_v1"}}))
    assert default.unique_id != v1.unique_id
    assert TagDocuments.VERSION >= "002"  # the default's spans changed with 'dolma_v1_fixed'


# --- dolma_v1: dolma 1.2.1's pii_regex_v1, span for span ---

V1_CASES = [  # (text, dolma's spans), worked out from dolma 1.2.1's taggers/pii.py and checked against it
    (MIXED, [(" jane.doe@example.com ", "email_address"), (" (555) 123-4567", "phone_number"),
             ("192.168.1.20", "ip_address")]),
    ("Write to (jane@example.com). Thanks", []),  # needs whitespace right after the address (or one edge char)
    ("Write to jane@example.com", []),
    ("Mail: o'brien@bücher.de now", [(": o'brien@bücher.de ", "email_address")]),  # leading edge characters too
    ("mail john@192.168.0.1 now", [(" john@192.168.0.1 ", "email_address"), ("192.168.0.1", "ip_address")]),
    ("Quote '@'. in prose", [(" '@'. ", "email_address")]),
    ("Use ``@dataclasses.dataclass``. here", [(" ``@dataclasses.dataclass``. ", "email_address")]),
    ("@jane@example.com here", []),  # judged by the part between the first and second "@": no "."
    ("x @ .@555 y", [(" @ .@555 ", "email_address")]),  # the edge run reaches past an "@", then backs up
    ("hash 1234567890abcdef and 12345678901234", [(" 1234567890", "phone_number"), (" 1234567890", "phone_number")]),
    ("ver 1.2.3.4.5 and 300.1.2.3 and 192.168.1.256",
     [("1.2.3.4", "ip_address"), ("00.1.2.3", "ip_address"), ("192.168.1.25", "ip_address")]),
    ("call\n\n 555 123 4567", [("\n\n 555 123 4567", "phone_number")]),
    ("tel ٥٥٥١٢٣٤٥٦٧ ok", [(" ٥٥٥١٢٣٤٥٦٧", "phone_number")]),  # digits of any script
    ("I was doing 555-123-4567", []),  # "doi" as a substring, case-sensitive
    ("ISBN 555-123-4567", [(" 555-123-4567", "phone_number")]),
    ("isbn 555-123-4567", []),
    ("#" + "x" * 99 + " 555-123-4567", []),  # within 100 characters of the span (its whitespace included)
    ("#" + "x" * 100 + " 555-123-4567", [(" 555-123-4567", "phone_number")]),
    ("call 555-123-4567, see http://example.com/page", [(" 555-123-4567", "phone_number")]),  # URL rule: never
    ("call 555-123-4567, see \x08http://example.com/page", []),  # ... but after a backspace character
    ("   \n ", []),  # no words: dolma's own tagger fails here
]


@pytest.mark.parametrize("text, spans", V1_CASES)
def test_dolma_v1_reproduces_dolmas_spans(text, spans):
    assert sorted(spans_of(text, "dolma_v1")) == sorted(spans)


def test_dolma_v1_counts_overlapping_spans_and_masks_them_once():
    text = "mail john@192.168.0.1 now"
    attributes = tag_pii([text], PiiTagging(rules="dolma_v1"))[0]
    assert attributes["span_count"] == [[0, len(text), 2]]
    assert pii_flags(attributes, PiiRules(max_spans=1), text) == ["pii_too_many_spans"]
    masked = "mail |||EMAIL_ADDRESS||| now"
    assert apply_edits(text, pii_edits(attributes, PiiRules(), text)) == (masked, 1)
    assert mask_pii(text, "dolma_v1") == (masked, 1)


EDGE = " \n.,?!;:()@"


def _dolma_email_pattern():
    # dolma's e-mail pattern, restated: edge characters, a run without whitespace and "@", "@", the
    # shortest domain, at most one edge character, whitespace
    return re.compile(r"[\s.,?!;:()@]*[^\s@]+@[^\s@,?!;:()]+?[\s.,?!;:()@]?\s")


def test_dolma_v1_email_scan_equals_the_regex_it_replaces():
    pattern, rng = _dolma_email_pattern(), random.Random(0)
    alphabet = list(EDGE) + ["a", "b.", "x", "\t", "ü", "@@", "  "]
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert list(_v1_email_matches(text)) == [m.span() for m in pattern.finditer(text)], repr(text)


@pytest.mark.parametrize("rules", PII_RULE_SETS)
def test_long_runs_take_linear_time(rules):
    texts = ["a" * 200_000 + " x@y.com ", " " * 200_000 + "x", "a." * 100_000 + "@b.c ", "@." * 100_000 + " ",
             "1." * 100_000, " \t" * 100_000 + "5"]
    start = time.perf_counter()
    for text in texts:
        find_pii(text, rules)
    assert time.perf_counter() - start < 5


DOLMA_PYTHON = Path(__file__).resolve().parents[2] / "benchmarks" / ".venv-dolma" / "bin" / "python"
DOLMA_TAGGER = """
import json, sys
from dolma.core.data_types import Document
from dolma.taggers.pii import PiiRegexV1
tagger = PiiRegexV1()
for line in sys.stdin:
    text = json.loads(line)
    try:
        spans = tagger.predict(Document(source="s", id="i", text=text)).spans
        print(json.dumps(sorted([s.start, s.end, s.type.lower()] for s in spans if s.type != "doc")))
    except ZeroDivisionError:
        print("[]")
"""


@pytest.mark.skipif(not DOLMA_PYTHON.exists(),
                    reason="dolma 1.2.1 not installed (python benchmarks/corpus.py installs it)")
def test_dolma_v1_equals_dolma_itself_on_random_texts():
    rng = random.Random(1)
    atoms = list(EDGE) + ["x", "ab", "doi", "isbn", "#", "ü", "٣", "-", "555", "123", "4567", "(555)", "192.168.",
                          "0.1", "255.", "256", "jane@x.com", "x@y.z ", "\x08http://a.com/x ", "www.", "\u2003", "'"]
    texts = [text for text, _ in V1_CASES]
    texts += ["".join(rng.choice(atoms) for _ in range(rng.randint(0, 50))) for _ in range(3000)]
    result = subprocess.run([str(DOLMA_PYTHON), "-c", DOLMA_TAGGER], input="".join(json.dumps(t) + "\n" for t in texts),
                            capture_output=True, text=True, timeout=300, check=True)
    theirs = [json.loads(line) for line in result.stdout.splitlines()]
    ours = [sorted([s, e, kind] for s, e, kind in find_pii(text, "dolma_v1")) for text in texts]
    assert len(theirs) == len(texts)
    differing = [(text, a, b) for text, a, b in zip(texts, ours, theirs) if a != b]
    assert not differing, differing[:3]
