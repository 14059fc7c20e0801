"""PII tagger and masking: e-mail addresses, phone numbers and IPv4 addresses, as Dolma masks them.

Each match is replaced by `` |||EMAIL_ADDRESS||| ``, `` |||PHONE_NUMBER||| `` or `` |||IP_ADDRESS||| ``
(spaces included). A phone or IP match closely preceded by "isbn", "doi" or "#" is a reference
number, not PII. Tagging records the spans; the rules remove documents with more than
``max_spans`` of them and mask the spans of the others.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterator

from steps.corpus.config import RuleSection, TaggerSection, require
from steps.corpus.spans import Attributes, Edits, document_value, whole_document

PII_RULES = ("pii_too_many_spans",)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# Patterns begin with a character class so the regex engine can skip ahead to candidates; the
# "not preceded by" conditions are checked after the first character (or in Python, for e-mail).
EMAIL_DOMAIN = re.compile(r"@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b")
EMAIL_LOCAL_PART = re.compile(r"[\w.%+-]{1,64}$")
PHONE_NUMBER = re.compile(r"(?<![\w+])(?:\+?1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-]?)\d{3}[ .-]\d{4}(?!\w)")
IP_ADDRESS = re.compile(rf"\d(?<![\d.]\d)\d{{0,2}}\.(?:{_OCTET}\.){{2}}{_OCTET}(?!\.?\d)")
PII_KINDS = ("email_address", "phone_number", "ip_address")
MASKS = {kind: f" |||{kind.upper()}||| " for kind in PII_KINDS}
REFERENCE_NUMBER_CONTEXT = re.compile(r"isbn|\bdoi\b|#")
CONTEXT_CHARS = 12  # how far before a phone/IP match "isbn", "doi" or "#" makes it a reference number


@dataclass(frozen=True)
class PiiTagging(TaggerSection):
    section = "pii"

    @staticmethod
    def applies_by_default(source: str) -> bool:
        return True


@dataclass(frozen=True)
class PiiRules(RuleSection):
    section = "pii"
    max_spans: int = 5
    mask: bool = True

    def __post_init__(self) -> None:
        require(self.max_spans >= 0, "filter.pii.max_spans", "a non-negative integer", self.max_spans)


def _email_spans(text: str) -> Iterator[tuple[int, int]]:
    for domain in EMAIL_DOMAIN.finditer(text):
        local_part = EMAIL_LOCAL_PART.search(text, max(0, domain.start() - 64), domain.start())
        if local_part:
            yield local_part.start(), domain.end()


def _is_reference_number(text: str, start: int) -> bool:
    return bool(REFERENCE_NUMBER_CONTEXT.search(text[max(0, start - CONTEXT_CHARS) : start].lower()))


def _phone_spans(text: str) -> Iterator[tuple[int, int]]:
    for match in PHONE_NUMBER.finditer(text):
        if not _is_reference_number(text, match.start()):
            yield match.span()


def _ip_spans(text: str) -> Iterator[tuple[int, int]]:
    for match in IP_ADDRESS.finditer(text):
        if int(match.group().split(".", 1)[0]) <= 255 and not _is_reference_number(text, match.start()):
            yield match.span()


SPAN_FINDERS: dict[str, Callable[[str], Iterator[tuple[int, int]]]] = {
    "email_address": _email_spans,
    "phone_number": _phone_spans,
    "ip_address": _ip_spans,
}


def find_pii(text: str) -> list[tuple[int, int, str]]:
    """Non-overlapping ``(start, end, kind)`` PII spans of ``text``, in order (earliest, then longest, wins)."""
    matches = sorted(((s, e, kind) for kind, find in SPAN_FINDERS.items() for s, e in find(text)),
                     key=lambda m: (m[0], -m[1]))
    spans, end = [], 0
    for span in matches:
        if span[0] >= end:
            spans.append(span)
            end = span[1]
    return spans


def mask_pii(text: str) -> tuple[str, int]:
    """``text`` with every PII span replaced by its mask, and the number of spans replaced."""
    spans = find_pii(text)
    pieces, position = [], 0
    for start, end, kind in spans:
        pieces += [text[position:start], MASKS[kind]]
        position = end
    pieces.append(text[position:])
    return "".join(pieces), len(spans)


def _pii_attributes(text: str) -> Attributes:
    spans = find_pii(text)
    attributes: Attributes = {kind: [[s, e, 1.0] for s, e, k in spans if k == kind] for kind in PII_KINDS}
    attributes["span_count"] = whole_document(text, len(spans))
    return attributes


def tag_pii(texts: list[str], tagging: PiiTagging) -> list[Attributes]:
    return [_pii_attributes(text) for text in texts]


def pii_flags(attributes: Attributes, rules: PiiRules, text: str) -> list[str]:
    return ["pii_too_many_spans"] if document_value(attributes, "span_count") > rules.max_spans else []


def pii_edits(attributes: Attributes, rules: PiiRules, text: str) -> Edits:
    if not rules.mask:
        return Edits()
    return Edits(replacements=[(s, e, MASKS[kind]) for kind in PII_KINDS for s, e, _ in attributes[kind]])
