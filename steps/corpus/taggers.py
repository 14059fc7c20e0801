"""Every tagger of the corpus, its tag config section, its rules and how they decide.

A tagger computes attributes of texts (:mod:`steps.corpus.spans`). Its rules read only those
attributes (and the text's length), so the filter step can change a threshold without tagging
again. Rules either remove a whole document (``flags``) or edit a kept one (``edits``). Taggers
run, and rules rank (a removed document is counted under the first rule that removed it), in
:data:`TAGGERS` order: language, code, Gopher, C4, toxicity, PII, as Dolma ordered its stages.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from steps.corpus.c4 import C4_RULES, C4Rules, C4Tagging, c4_edits, c4_flags, tag_c4
from steps.corpus.code import CODE_RULES, CodeRules, CodeTagging, code_flags, tag_code
from olmo_model.config import Config, require
from steps.corpus.config import RuleSection, TaggerSection
from steps.corpus.pii import PII_RULES, PiiRules, PiiTagging, pii_edits, pii_flags, tag_pii
from steps.corpus.quality import GOPHER_RULES, GopherRules, gopher_attributes, gopher_flags
from steps.corpus.spans import Attributes, Edits, document_value, whole_document


# --- Language: English score per paragraph, document score the length-weighted mean (Dolma). ---

@dataclass(frozen=True)
class LanguageTagging(TaggerSection):
    section = "language"


@dataclass(frozen=True)
class LanguageRules(RuleSection):
    section = "language"
    min_doc_en: float = 0.5

    def __post_init__(self) -> None:
        require(0 <= self.min_doc_en <= 1, "filter.language.min_doc_en", "a number in [0, 1]", self.min_doc_en)


def tag_language(texts: list[str], tagging: LanguageTagging) -> list[Attributes]:
    from steps.corpus.language import language_attributes_batch  # loads the model only when used

    return language_attributes_batch(texts)


def language_flags(attributes: Attributes, rules: LanguageRules, text: str) -> list[str]:
    return ["language_not_english"] if document_value(attributes, "doc_en") < rules.min_doc_en else []


# --- Toxicity / NSFW: a score per sentence; sentences scoring at least the threshold are deleted. ---

@dataclass(frozen=True)
class ToxicityTagging(TaggerSection):
    section = "toxicity"


@dataclass(frozen=True)
class ToxicityRules(RuleSection):
    section = "toxicity"
    sentence_threshold: float = 0.4

    def __post_init__(self) -> None:
        require(0 <= self.sentence_threshold <= 1, "filter.toxicity.sentence_threshold", "a number in [0, 1]",
                self.sentence_threshold)


def tag_toxicity(texts: list[str], tagging: ToxicityTagging) -> list[Attributes]:
    from steps.corpus.toxicity import toxicity_attributes_batch  # loads the classifier only when used

    return toxicity_attributes_batch(texts)


def toxicity_edits(attributes: Attributes, rules: ToxicityRules, text: str) -> Edits:
    """Delete each sentence scoring at least the threshold, with the spaces that follow it."""
    deletions = []
    for start, end, score in attributes["sentences"]:
        if score >= rules.sentence_threshold:
            while end < len(text) and text[end] in " \t":
                end += 1
            deletions.append((start, end))
    return Edits(deletions=deletions)


# --- Gopher: whole-document quality attributes. ---

@dataclass(frozen=True)
class GopherTagging(TaggerSection):
    section = "gopher"


def tag_gopher(texts: list[str], tagging: GopherTagging) -> list[Attributes]:
    return [{name: whole_document(text, value) for name, value in gopher_attributes(text).items()} for text in texts]


def _no_flags(attributes: Attributes, rules: RuleSection, text: str) -> list[str]:
    return []


@dataclass(frozen=True)
class Tagger:
    tagging: type[TaggerSection]
    rules: type[RuleSection]
    rule_names: tuple[str, ...]  # every rule ``flags`` may return, in rank order
    tag: Callable[[list[str], Any], list[Attributes]]
    flags: Callable[[Attributes, Any, str], list[str]] = _no_flags
    edits: Callable[[Attributes, Any, str], Edits] | None = None
    deletions_stat: str | None = None  # the filter stat that counts the spans ``edits`` deletes


TAGGERS: dict[str, Tagger] = {
    "language": Tagger(LanguageTagging, LanguageRules, ("language_not_english",), tag_language, language_flags),
    "code": Tagger(CodeTagging, CodeRules, CODE_RULES, tag_code, code_flags),
    "gopher": Tagger(GopherTagging, GopherRules, GOPHER_RULES, tag_gopher, gopher_flags),
    "c4": Tagger(C4Tagging, C4Rules, C4_RULES, tag_c4, c4_flags, c4_edits, "c4_lines_removed"),
    "toxicity": Tagger(ToxicityTagging, ToxicityRules, (), tag_toxicity, edits=toxicity_edits,
                       deletions_stat="toxic_sentences_removed"),
    "pii": Tagger(PiiTagging, PiiRules, PII_RULES, tag_pii, pii_flags, pii_edits),
}
EMPTIED_RULE = "emptied_by_edits"  # a kept document whose edits left no text
RULE_ORDER = (*(rule for tagger in TAGGERS.values() for rule in tagger.rule_names), EMPTIED_RULE)


@dataclass(frozen=True)
class TagConfig(Config):
    """The tag step's config: per tagger, whether it runs, on which sources, with which parameters."""

    WHERE = "tag"

    language: LanguageTagging = field(default_factory=LanguageTagging)
    code: CodeTagging = field(default_factory=CodeTagging)
    gopher: GopherTagging = field(default_factory=GopherTagging)
    c4: C4Tagging = field(default_factory=C4Tagging)
    toxicity: ToxicityTagging = field(default_factory=ToxicityTagging)
    pii: PiiTagging = field(default_factory=PiiTagging)

    def taggers_for(self, source: str) -> list[str]:
        """Names of the taggers that tag ``source``, in :data:`TAGGERS` order."""
        return [name for name in TAGGERS if getattr(self, name).applies(source)]


@dataclass(frozen=True)
class FilterConfig(Config):
    """The filter step's config: per tagger, whether its rules apply and their thresholds (Dolma's by default)."""

    WHERE = "filter"

    language: LanguageRules = field(default_factory=LanguageRules)
    code: CodeRules = field(default_factory=CodeRules)
    gopher: GopherRules = field(default_factory=GopherRules)
    c4: C4Rules = field(default_factory=C4Rules)
    toxicity: ToxicityRules = field(default_factory=ToxicityRules)
    pii: PiiRules = field(default_factory=PiiRules)

