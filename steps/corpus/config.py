"""What the corpus stages' configs share: source selectors and the sections every tagger has in the tag and
filter configs (built by ``olmo_model.config.build_config``)."""
from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar, Union

from olmo_model.config import require


# Which sources a rule applies to: a list of source names, "*" for all, or None for the rule's default.
Selector = Union[str, tuple[str, ...], None]


def check_selector(selector: Selector, where: str) -> None:
    if isinstance(selector, str):
        require(selector == "*", where, "'*', a list of source names or null", selector)


def selects(selector: Selector, source: str, default: Callable[[str], bool]) -> bool:
    if selector is None:
        return default(source)
    return selector == "*" or source in selector


def not_code(source: str) -> bool:
    """The default selection of prose rules: every source without "code" in its name."""
    return "code" not in source


@dataclasses.dataclass(frozen=True)
class TaggerSection:
    """What every tagger's section of the tag config has: a switch and the sources it tags.

    ``sources`` is a list of source names, ``"*"`` for all, or null for the tagger's default
    (:meth:`applies_by_default`: sources without "code" in their name unless a tagger says otherwise).
    """

    section: ClassVar[str]
    enabled: bool = True
    sources: Selector = None

    def __post_init__(self) -> None:
        check_selector(self.sources, f"tag.{self.section}.sources")

    @staticmethod
    def applies_by_default(source: str) -> bool:
        return not_code(source)

    def applies(self, source: str) -> bool:
        return self.enabled and selects(self.sources, source, self.applies_by_default)


@dataclasses.dataclass(frozen=True)
class RuleSection:
    """What every tagger's section of the filter config has: a switch for its rules. The rules
    apply to the documents the tagger tagged; their thresholds are the section's other fields."""

    section: ClassVar[str]
    enabled: bool = True
