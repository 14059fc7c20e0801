"""PII tagger and masking: e-mail addresses, phone numbers and IPv4 addresses, as Dolma masks them.

Each span is replaced by `` |||EMAIL_ADDRESS||| ``, `` |||PHONE_NUMBER||| `` or `` |||IP_ADDRESS||| ``
(spaces included). Tagging records the spans; the rules remove documents with more than
``max_spans`` of them and mask the spans of the others. Which spans are PII is the tagger's
``rules`` (``tag.pii.rules``, part of the tag step's config and so of its fingerprint):

``dolma_v1_fixed`` (the default): Dolma's three kinds and its reference-number rule, without the
errors of either this project's first version or dolma's tagger:

- an e-mail address is a local part of letters and digits of any script and RFC 5322's
  ``!#$%&'*+/=?^_`{|}~.-`` (starting with a letter, digit or ``_``; ``o'brien``), ``@``, and a
  domain of labels of any script with a top-level domain of at least two letters (``bücher.de``,
  ``xn--`` punycode too) or an IPv4 address, bare or in brackets (``john@192.168.0.1`` is one
  e-mail address, not an IP address). The span is the address alone;
- a phone number is a North American 3-3-4 number with a separator between the groups
  (``555-123-4567``, ``555.123.4567``, ``(555) 123-4567``, ``+1 555 123 4567``), not part of a
  longer word or number: bare 10-digit runs (parts of hashes, IDs, longer numbers) and runs like
  ``xf86-012804-2330`` or ``20181126.091102.8480`` are not phone numbers;
- an IPv4 address is four dot-separated octets 0-255 of ASCII digits, not part of a longer dotted
  number (no "1.2.3.4" out of "1.2.3.4.5", no "00.1.2.3" out of "300.1.2.3");
- a phone number or IP address with "isbn", "doi" (as a word) or "#" within 100 characters on
  either side is a reference number, not PII (dolma's rule, case-insensitive here);
- spans do not overlap: the earliest, then the longest, wins.

``dolma_v1``: dolma 1.2.1's ``pii_regex_v1`` tagger, span for span (the same spans, the same
count), its quirks included:

- an e-mail span is a regex match, not the address: it takes any run of whitespace and
  ``.,?!;:()@`` before the address, and one such character and one whitespace character after it
  (``" (jane@x.com) "`` whole); an address not followed by whitespace (at the end of the text, or
  followed by ``").``) is not found;
- its "local part" is any run of characters other than whitespace and ``@``
  (``"(mailto:jane"``), so ``'@'.`` or ``x@dataclasses.dataclass`` in prose or code count; the
  only checks are that the part before the first ``@`` of the span, stripped, is not ``(`` and the
  part between the first and second ``@`` holds a ``.`` (a span that begins with ``@`` is judged
  by the wrong parts);
- a phone span starts with the whitespace before the number; any 10 digits (of any script) grouped
  3-3-4 with optional ``(``, ``)``, ``-``, ``.`` or spaces after whitespace match, the end
  unchecked: the first 10 digits of a longer number or of a hex hash;
- an IP address is four octets anywhere, no boundary checked: "1.2.3.4" out of "1.2.3.4.5",
  "00.1.2.3" out of "300.1.2.3", "192.168.1.25" out of "192.168.1.256";
- a phone or IP span is dropped when "isbn", "doi" or "#" occurs within 100 characters of the span
  on either side, case-sensitively and as a substring: "doing" drops it, "ISBN" does not;
- dolma means to drop every phone number of a document holding a URL, but its URL pattern is a
  non-raw Python string whose ``\\b`` is a backspace (U+0008): the rule fires only on a URL
  right after a backspace character, i.e. in practice never. Reproduced as written;
- the three patterns run independently, so spans of different kinds may overlap (the IP address
  inside ``" john@192.168.0.1 "`` is a second span); all count. Masking merges overlapping spans
  into one mask, of the kind of the one that starts first;
- dolma's tagger fails (ZeroDivisionError in its document score) on a text without words; here
  such a text has no spans.

The patterns are written here from dolma's behaviour, some in equivalent forms that cannot
backtrack catastrophically (dolma's own take quadratic time on long runs of whitespace or of
characters without ``@``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterator, Literal

from olmo_model.config import require
from steps.corpus.config import RuleSection, TaggerSection
from steps.corpus.spans import Attributes, Edits, document_value, whole_document

PII_RULES = ("pii_too_many_spans",)
PII_RULE_SETS = ("dolma_v1_fixed", "dolma_v1")
PiiRuleSet = Literal["dolma_v1_fixed", "dolma_v1"]
PII_KINDS = ("email_address", "phone_number", "ip_address")
MASKS = {kind: f" |||{kind.upper()}||| " for kind in PII_KINDS}
REFERENCE_WINDOW = 100  # "isbn", "doi" or "#" this close to a phone/IP match makes it a reference number

SpanFinder = Callable[[str], Iterator[tuple[int, int]]]


@dataclass(frozen=True)
class PiiTagging(TaggerSection):
    """``rules``: which spans are PII, ``"dolma_v1_fixed"`` (the default) or ``"dolma_v1"`` (see the module)."""

    section = "pii"
    rules: PiiRuleSet = "dolma_v1_fixed"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.rules in PII_RULE_SETS, "tag.pii.rules", f"one of {', '.join(map(repr, PII_RULE_SETS))}",
                self.rules)

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


# --- dolma_v1_fixed ----------------------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
# Patterns begin with a character class so the regex engine can skip ahead to candidates; the
# "not preceded by" conditions are checked after the first character (or in Python, for e-mail).
EMAIL_DOMAIN = re.compile(
    r"@(?:"
    r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+(?:[^\W\d_]{2,63}|xn--[a-z0-9-]{1,59})(?![\w-])"  # names, any script
    rf"|\[{_IPV4}\]|{_IPV4}(?!\.?[0-9])"  # an address literal
    r")",
    re.IGNORECASE,
)
EMAIL_LOCAL_PART = re.compile(r"\w[\w!#$%&'*+/=?^`{|}~.-]{0,63}$")
PHONE_NUMBER = re.compile(r"(?<![\w+])(?<![0-9][.-])(?:\+?1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?!\w)")
IP_ADDRESS = re.compile(rf"[0-9](?<![0-9.][0-9])[0-9]{{0,2}}\.(?:{_OCTET}\.){{2}}{_OCTET}(?!\.?[0-9])")
REFERENCE_NUMBER_CONTEXT = re.compile(r"isbn|\bdoi\b|#", re.IGNORECASE)


def _email_spans(text: str) -> Iterator[tuple[int, int]]:
    for domain in EMAIL_DOMAIN.finditer(text):
        local_part = EMAIL_LOCAL_PART.search(text, max(0, domain.start() - 64), domain.start())
        if local_part:
            yield local_part.start(), domain.end()


def _is_reference_number(text: str, start: int, end: int) -> bool:
    """Whether "isbn", the word "doi" or "#" lies within the reference window around ``text[start:end]``."""
    low, high = max(0, start - REFERENCE_WINDOW), end + REFERENCE_WINDOW
    found = REFERENCE_NUMBER_CONTEXT.search(text, low, high + 1)  # one more character: "doi" must end a word
    return found is not None and found.end() <= high


def _phone_spans(text: str) -> Iterator[tuple[int, int]]:
    for match in PHONE_NUMBER.finditer(text):
        if not _is_reference_number(text, *match.span()):
            yield match.span()


def _ip_spans(text: str) -> Iterator[tuple[int, int]]:
    for match in IP_ADDRESS.finditer(text):
        if int(match.group().split(".", 1)[0]) <= 255 and not _is_reference_number(text, *match.span()):
            yield match.span()


def _without_overlaps(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """``spans`` in order, each overlapping an earlier kept one dropped (earliest, then longest, first)."""
    kept, end = [], 0
    for span in sorted(spans, key=lambda s: (s[0], -s[1], PII_KINDS.index(s[2]))):
        if span[0] >= end:
            kept.append(span)
            end = span[1]
    return kept


# --- dolma_v1: dolma 1.2.1's pii_regex_v1 -------------------------------------------------------

# with whitespace and "@", the characters dolma's e-mail match takes around an address
_V1_EDGE_PUNCTUATION = frozenset(".,?!;:()")
# after the "@": the shortest domain (no whitespace, "@" or ",?!;:()"), then maybe one edge character, then whitespace
_V1_EMAIL_TAIL = re.compile(r"[^\s@,?!;:()]+?[\s.,?!;:()@]?\s")
# whitespace run, then 3-3-4 digits; the run taken from its first character (what the leftmost match does)
_V1_PHONE = re.compile(r"(?<!\s)\s++\(?\d{3}\)?[-. ]*\d{3}[-. ]?\d{4}")
_V1_OCTET = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)"  # alternatives in dolma's order: the first that fits wins
_V1_IP = re.compile(rf"(?:{_V1_OCTET}\.){{3}}{_V1_OCTET}")
# dolma's URL pattern (John Gruber's liberal one) behind the backspace its "\b" became; only whether it
# matches matters, so its nested repetitions are written in a form that accepts the same texts in linear time
_V1_URL = re.compile(
    "\x08"
    r"(?:https?://|www\d{0,3}[.]|[a-z0-9.\-]+[.][a-z]{2,4}/)"
    r"(?:[^\s()<>]|\((?:[^\s()<>]|\([^\s()<>]+\))*\))+"
    r"(?:\((?:[^\s()<>]|\([^\s()<>]+\))*\)|[^\s`!()\[\]{};:'\".,<>?«»“”‘’])",
    re.IGNORECASE,
)


def _v1_edge(char: str) -> bool:
    return char in _V1_EDGE_PUNCTUATION or char == "@" or char.isspace()


def _v1_email_matches(text: str) -> Iterator[tuple[int, int]]:
    """What ``finditer`` of dolma's e-mail pattern yields, computed from the "@"s in linear time.

    The pattern is: edge characters (whitespace, ``.,?!;:()@``), greedily; one or more characters
    other than whitespace and "@" (the "segment"); "@"; the shortest domain followed by at most one
    edge character and by whitespace (the "tail"). An "@" is usable when a non-empty segment ends
    at it and a tail follows it. The leftmost match starts at the edge run before the segment of
    the first usable "@"; from there the greedy edge run may reach past it (through edge
    characters, "@" being one), and the match then ends at the tail of the usable "@" after the
    last segment it can reach: the regex engine tries the longest edge run first.
    """
    n, position, at = len(text), 0, text.find("@")
    while at != -1:
        begin = _v1_segment_start(text, at, position)
        tail = _V1_EMAIL_TAIL.match(text, at + 1) if begin < at else None
        if tail is None:
            at = text.find("@", at + 1)
            continue
        start = begin
        while start > position and _v1_edge(text[start - 1]):
            start -= 1
        edge_end = begin
        while edge_end < n and _v1_edge(text[edge_end]):
            edge_end += 1
        # segments reachable from ``start``: one beginning at ``edge_end``, then those made of the edge
        # punctuation inside the edge run, tried right to left; the first whose "@" is usable wins
        end = None
        if edge_end < n:
            stop = _v1_segment_end(text, edge_end)
            end = _v1_usable_tail_end(text, stop)
        cut = edge_end
        while end is None:
            while text[cut - 1].isspace() or text[cut - 1] == "@":
                cut -= 1
            end = _v1_usable_tail_end(text, cut) if cut < edge_end else None
            cut = _v1_segment_start(text, cut, start)
        yield start, end
        position = end
        at = text.find("@", position)


def _v1_segment_start(text: str, end: int, floor: int) -> int:
    """Where the run of characters other than whitespace and "@" that ends at ``end`` begins (not before ``floor``)."""
    begin = end
    while begin > floor and not text[begin - 1].isspace() and text[begin - 1] != "@":
        begin -= 1
    return begin


def _v1_segment_end(text: str, start: int) -> int:
    end = start
    while end < len(text) and not text[end].isspace() and text[end] != "@":
        end += 1
    return end


def _v1_usable_tail_end(text: str, at: int) -> int | None:
    """Where the match through ``text[at]`` ends, if that is an "@" followed by a tail."""
    if at >= len(text) or text[at] != "@":
        return None
    tail = _V1_EMAIL_TAIL.match(text, at + 1)
    return tail.end() if tail else None


def _v1_email_spans(text: str) -> Iterator[tuple[int, int]]:
    for start, end in _v1_email_matches(text):
        parts = text[start:end].split("@")
        if parts[0].strip() != "(" and "." in parts[1]:
            yield start, end


def _v1_is_reference_number(text: str, start: int, end: int) -> bool:
    context = text[max(0, start - REFERENCE_WINDOW) : end + REFERENCE_WINDOW]
    return "isbn" in context or "doi" in context or "#" in context


def _v1_phone_spans(text: str) -> Iterator[tuple[int, int]]:
    if "\x08" in text and _V1_URL.search(text):
        return
    for match in _V1_PHONE.finditer(text):
        if not _v1_is_reference_number(text, *match.span()):
            yield match.span()


def _v1_ip_spans(text: str) -> Iterator[tuple[int, int]]:
    if "." not in text:
        return
    for match in _V1_IP.finditer(text):
        if not _v1_is_reference_number(text, *match.span()):
            yield match.span()


SPAN_FINDERS: dict[str, dict[str, SpanFinder]] = {
    "dolma_v1_fixed": {"email_address": _email_spans, "phone_number": _phone_spans, "ip_address": _ip_spans},
    "dolma_v1": {"email_address": _v1_email_spans, "phone_number": _v1_phone_spans, "ip_address": _v1_ip_spans},
}


# --- both --------------------------------------------------------------------------------------

def find_pii(text: str, rules: str = "dolma_v1_fixed") -> list[tuple[int, int, str]]:
    """The ``(start, end, kind)`` PII spans of ``text`` under ``rules``, by start.

    Under ``dolma_v1_fixed`` they do not overlap (the earliest, then the longest, wins); under
    ``dolma_v1`` they are dolma's, overlaps between kinds included.
    """
    require(rules in SPAN_FINDERS, "tag.pii.rules", f"one of {', '.join(map(repr, PII_RULE_SETS))}", rules)
    spans = [(s, e, kind) for kind, find in SPAN_FINDERS[rules].items() for s, e in find(text)]
    if rules == "dolma_v1":
        return sorted(spans, key=lambda s: (s[0], -s[1], PII_KINDS.index(s[2])))
    return _without_overlaps(spans)


def masks(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """``(start, end, mask)`` replacements of PII spans: overlapping spans merge into one mask, of the
    kind of the span that starts first (then the longest)."""
    merged: list[list] = []
    for start, end, kind in sorted(spans, key=lambda s: (s[0], -s[1], PII_KINDS.index(s[2]))):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end, MASKS[kind]])
    return [tuple(m) for m in merged]


def mask_pii(text: str, rules: str = "dolma_v1_fixed") -> tuple[str, int]:
    """``text`` with every PII span replaced by its mask, and the number of masks put in."""
    replacements = masks(find_pii(text, rules))
    pieces, position = [], 0
    for start, end, mask in replacements:
        pieces += [text[position:start], mask]
        position = end
    pieces.append(text[position:])
    return "".join(pieces), len(replacements)


def _pii_attributes(text: str, rules: str) -> Attributes:
    spans = find_pii(text, rules)
    attributes: Attributes = {kind: [[s, e, 1.0] for s, e, k in spans if k == kind] for kind in PII_KINDS}
    attributes["span_count"] = whole_document(text, len(spans))
    return attributes


def tag_pii(texts: list[str], tagging: PiiTagging) -> list[Attributes]:
    return [_pii_attributes(text, tagging.rules) for text in texts]


def pii_flags(attributes: Attributes, rules: PiiRules, text: str) -> list[str]:
    return ["pii_too_many_spans"] if document_value(attributes, "span_count") > rules.max_spans else []


def pii_edits(attributes: Attributes, rules: PiiRules, text: str) -> Edits:
    if not rules.mask:
        return Edits()
    return Edits(replacements=masks([(s, e, kind) for kind in PII_KINDS for s, e, _ in attributes[kind]]))
