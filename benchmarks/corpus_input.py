"""The corpus benchmark's input: a seeded, offline mix of web and wiki documents in Dolma shards.

Prose comes from the sentences of the Python standard library's docstrings (the embedded
``python-docs`` source), recombined into paragraphs, so every document is new text. Around it:
web pages with navigation lines, shared footers and PII (e-mail addresses, phone numbers, IPs),
wiki articles with headings and reference lists, and junk the Gopher rules exist for (repeated
lines, bullet lists, hashtags, number tables, ellipsis teasers, keyword lists, long tokens, spam
phrases, repeated paragraphs, very short pages), some of it near the thresholds. Exact copies,
re-crawls of a URL and pages mirrored across sources give dedup its work. The same ``seed`` and
interpreter give the same bytes.
"""
from __future__ import annotations

import gzip
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steps.corpus.embedded import EmbeddedSource, embedded_documents  # noqa: E402

SOURCES = ("web", "wiki")
WEB_FRACTION = 0.6
SHARDS_PER_SOURCE = 4
ADDED = "2024-01-01T00:00:00.000Z"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def prose_sentences() -> list[str]:
    """Distinct, sorted sentences of 5..40 words from the standard library's docstrings."""
    docs = embedded_documents(EmbeddedSource("docs", "embedded", "python-docs"), Counter())
    sentences = {s for doc in docs for line in doc["text"].split("\n") for s in SENTENCE_END.split(line)}
    return sorted(
        s for s in sentences
        if 5 <= len(s.split()) <= 40 and s[-1] in ".!?" and sum(c.isalpha() for c in s) > 0.7 * len(s)
    )


class Writer:
    """Makes the pieces of documents from a seeded generator and the sentence pool."""

    def __init__(self, rng: random.Random, sentences: list[str]):
        self.rng, self.sentences = rng, sentences
        self.footers = [f"Copyright \u00a9 20{y:02d} {n} Media. All rights reserved." for y in range(10, 24)
                        for n in ("Example", "Northwind", "Contoso", "Acme", "Globex")]

    def paragraph(self, low: int = 2, high: int = 6) -> str:
        return " ".join(self.rng.sample(self.sentences, self.rng.randint(low, high)))

    def prose(self, chars: int) -> list[str]:
        paragraphs = [self.paragraph()]
        while sum(map(len, paragraphs)) < chars:
            paragraphs.append(self.paragraph())
        return paragraphs

    def words(self, count: int) -> list[str]:
        return " ".join(self.rng.sample(self.sentences, 8)).split()[:count]

    def title(self) -> str:
        return " ".join(w.strip(".,;:()'\"`").capitalize() for w in self.words(self.rng.randint(2, 6)))

    def email(self) -> str:
        user = self.rng.choice(("info", "jane.doe", "j.smith", "sales", "press", "admin"))
        return f"{user}{self.rng.randint(1, 99)}@{self.rng.choice(('example', 'mail', 'corp'))}.{self.rng.choice(('com', 'org', 'net'))}"

    def phone(self) -> str:
        a, b, c = self.rng.randint(201, 989), self.rng.randint(200, 999), self.rng.randint(0, 9999)
        return self.rng.choice((f"({a}) {b}-{c:04d}", f"{a}-{b}-{c:04d}", f"{a}.{b}.{c:04d}"))

    def ip(self) -> str:
        return ".".join(str(self.rng.randint(1, 254)) for _ in range(4))

    def pii_line(self) -> str:
        kind = self.rng.choice(("email", "phone", "ip"))
        if kind == "email":
            return f"For questions, write to {self.email()} and we will get back to you."
        if kind == "phone":
            return f"Call our office at {self.phone()} during business hours."
        return f"The server at {self.ip()} was blocked after the report."


# ---------------------------------------------------------------------------------------------
# Document kinds: each returns the text's lines (joined with "\n", or "\n\n" for some web pages).

def web_article(w: Writer) -> list[str]:
    rng = w.rng
    lines = [w.title()] if rng.random() < 0.8 else []
    if rng.random() < 0.5:
        lines.append(" | ".join(rng.sample(("Home", "News", "Blog", "About", "Contact", "Shop", "Forum"), 4)))
    if rng.random() < 0.3:
        lines.append(f"Posted by admin on 20{rng.randint(10, 23)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}")
    lines += w.prose(rng.randint(1400, 3400))
    if rng.random() < 0.3:
        lines[rng.randrange(1, len(lines))] += " " + " ".join(f"#{x.strip('.,').lower()}" for x in w.words(3))
    if rng.random() < 0.25:
        lines += [f"- {w.title()}" for _ in range(rng.randint(2, 7))]
    if rng.random() < 0.15:
        lines += [f"{w.title()}\u2026" for _ in range(rng.randint(1, 3))]
    for _ in range(rng.choice((0, 0, 0, 1, 1, 2, 3))):
        lines.insert(rng.randrange(1, len(lines) + 1), w.pii_line())
    if rng.random() < 0.6:
        lines.append(rng.choice(w.footers))
    return lines


def contact_page(w: Writer) -> list[str]:
    """More than five PII spans: removed by the PII rule."""
    return [w.title(), *w.prose(800), *(w.pii_line() for _ in range(w.rng.randint(6, 10)))]


def repeated_lines(w: Writer) -> list[str]:
    spam = [w.paragraph(1, 1) for _ in range(w.rng.randint(1, 3))]
    return w.prose(w.rng.randint(0, 1200)) + [w.rng.choice(spam) for _ in range(w.rng.randint(6, 20))]


def bullet_list(w: Writer) -> list[str]:
    marker = w.rng.choice(("- ", "* ", "-", "*"))
    lines = [f"{marker}{w.title()} {w.paragraph(1, 1)}" for _ in range(w.rng.randint(10, 30))]
    return [w.title()] * w.rng.randint(0, 3) + lines


def hashtags(w: Writer) -> list[str]:
    lines = w.prose(w.rng.randint(300, 1500))
    tags = [f"#{x.strip('.,()`:').lower()}" for x in w.words(40)]
    return lines + [" ".join(tags[: w.rng.randint(5, 40)])]


def too_short(w: Writer) -> list[str]:
    return [" ".join(w.words(w.rng.randint(5, 60)))]


def number_table(w: Writer) -> list[str]:
    rng = w.rng
    rows = [" ".join(f"{rng.uniform(0, 999):.{rng.randint(0, 2)}f}" for _ in range(rng.randint(4, 9)))
            for _ in range(rng.randint(8, 40))]
    if rng.random() < 0.3:
        rows = [row + " 1\u00bd \u00bd" for row in rows]  # vulgar fractions: numeric, not letters
    return [w.title(), w.paragraph(1, 3)] + rows


def ellipsis_teasers(w: Writer) -> list[str]:
    rng = w.rng
    end = rng.choice(("\u2026", "...", " \u2026", "\u2026 "))
    teasers = [f"{w.paragraph(1, 1)[:rng.randint(40, 120)]}{end}" for _ in range(rng.randint(4, 14))]
    return w.prose(rng.randint(200, 1200)) + teasers


def keyword_list(w: Writer) -> list[str]:
    """SEO keywords in title case: few lower-case stop words."""
    rng = w.rng
    keywords = [w.title() for _ in range(rng.randint(20, 60))]
    if rng.random() < 0.5:
        keywords = [k.replace(" ", rng.choice((" The ", " And ", " Of ", " the, ", " ")), 1) for k in keywords]
    return [", ".join(keywords[i:i + 6]) for i in range(0, len(keywords), 6)]


def long_tokens(w: Writer) -> list[str]:
    rng = w.rng
    tokens = [rng.choice((f"https://www.example.com/{'/'.join(x.strip('.,').lower() for x in w.words(3))}",
                          f"{rng.getrandbits(128):032x}", f"{w.title().replace(' ', '')}Exception"))
              for _ in range(rng.randint(30, 120))]
    return [w.paragraph(1, 2)] + [" ".join(tokens[i:i + 5]) for i in range(0, len(tokens), 5)]


def spam_phrase(w: Writer) -> list[str]:
    phrase = " ".join(w.words(w.rng.randint(2, 4)))
    return w.prose(w.rng.randint(300, 1500)) + [" ".join([phrase] * w.rng.randint(8, 40))]


def repeated_paragraphs(w: Writer) -> list[str]:
    rng = w.rng
    paragraphs = w.prose(rng.randint(600, 2000))
    return paragraphs + [rng.choice(paragraphs) for _ in range(rng.randint(1, 4))]


def wiki_article(w: Writer) -> list[str]:
    rng = w.rng
    lines = [w.title(), *w.prose(rng.randint(300, 800))]
    while sum(map(len, lines)) < rng.randint(1500, 3500):
        lines += [w.title(), *w.prose(rng.randint(300, 900))]
    if rng.random() < 0.4:
        lines += ["References"] + [f"* {w.paragraph(1, 1)}" for _ in range(rng.randint(1, 6))]
    if rng.random() < 0.05:
        lines.insert(rng.randrange(1, len(lines)), w.pii_line())
    lines.append("Categories: " + " | ".join(w.title() for _ in range(rng.randint(1, 4))))
    return lines


def wiki_stub(w: Writer) -> list[str]:
    return [w.title(), w.paragraph(1, 3), "This article is a stub. You can help by expanding it."]


def wiki_list(w: Writer) -> list[str]:
    return [f"List of {w.title()}", w.paragraph(1, 2)] + [f"* {w.title()}" for _ in range(w.rng.randint(15, 50))]


def disambiguation(w: Writer) -> list[str]:
    entries = [f"* {w.title()}, {w.paragraph(1, 1)}" for _ in range(w.rng.randint(3, 12))]
    return [w.title(), f"{w.title()} may refer to:"] + entries


Kind = Callable[[Writer], list[str]]
KINDS: dict[str, dict[Kind, float]] = {  # source -> kind -> weight
    "web": {web_article: 0.62, contact_page: 0.03, repeated_lines: 0.04, bullet_list: 0.04, hashtags: 0.03,
            too_short: 0.04, number_table: 0.03, ellipsis_teasers: 0.04, keyword_list: 0.04, long_tokens: 0.02,
            spam_phrase: 0.03, repeated_paragraphs: 0.04},
    "wiki": {wiki_article: 0.86, wiki_stub: 0.05, wiki_list: 0.05, disambiguation: 0.04},
}
EXACT_COPY_RATE = 0.05  # a new id and URL, the text of an earlier document
RECRAWL_RATE = 0.03  # the URL of an earlier document, its text with a changed first line
MIRROR_RATE = 0.02  # a web page holding an earlier wiki article's text


def _url(source: str, index: int) -> str:
    if source == "wiki":
        return f"https://en.wiki.example/wiki/Article_{index}"
    return f"https://site{index % 997}.example.com/posts/{index}"


def make_documents(num_documents: int, seed: int = 0) -> dict[str, list[dict]]:
    """``{source: documents}`` in the order they are written; ids ``<source>-<n>``."""
    rng = random.Random(seed)
    w = Writer(rng, prose_sentences())
    docs: dict[str, list[dict]] = {source: [] for source in SOURCES}
    earlier: list[dict] = []
    for _ in range(num_documents):
        source = "web" if rng.random() < WEB_FRACTION else "wiki"
        index = len(docs[source])
        url, roll = _url(source, index), rng.random()
        if earlier and roll < EXACT_COPY_RATE:
            kind, text = "exact_copy", rng.choice(earlier)["text"]
        elif earlier and roll < EXACT_COPY_RATE + RECRAWL_RATE:
            original = rng.choice(earlier)
            kind, url = "recrawl", original["metadata"]["url"]
            text = w.title() + "\n" + original["text"].split("\n", 1)[-1]
        elif source == "web" and roll < EXACT_COPY_RATE + RECRAWL_RATE + MIRROR_RATE and docs["wiki"]:
            kind, text = "mirror", rng.choice(docs["wiki"])["text"]
        else:
            kinds = KINDS[source]
            make = rng.choices(list(kinds), weights=list(kinds.values()))[0]
            separator = "\n\n" if source == "web" and rng.random() < 0.05 else "\n"
            kind, text = make.__name__, separator.join(make(w))
        doc = {"id": f"{source}-{index:07d}", "text": text, "source": source, "added": ADDED,
               "created": ADDED, "metadata": {"url": url, "kind": kind}}
        docs[source].append(doc)
        earlier.append(doc)
    return docs


def write_corpus(documents_dir: str | Path, num_documents: int, seed: int = 0) -> dict[str, Any]:
    """Write ``<documents_dir>/<source>/<source>-<k>.jsonl.gz`` shards.

    Returns documents per source and per kind, and the number of characters and of non-blank lines.
    """
    counts: dict[str, Any] = {"sources": {}, "kinds": Counter(), "characters": 0, "paragraphs": 0}
    for source, docs in make_documents(num_documents, seed).items():
        size = -(-len(docs) // SHARDS_PER_SOURCE)
        for shard in range(SHARDS_PER_SOURCE):
            path = Path(documents_dir) / source / f"{source}-{shard:04d}.jsonl.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = "".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs[shard * size:(shard + 1) * size])
            path.write_bytes(gzip.compress(lines.encode("utf-8"), mtime=0))
        counts["sources"][source] = len(docs)
        for doc in docs:
            counts["kinds"][doc["metadata"]["kind"]] += 1
            counts["characters"] += len(doc["text"])
            counts["paragraphs"] += sum(1 for line in doc["text"].split("\n") if line.strip())
    return counts


if __name__ == "__main__":
    directory, documents, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(write_corpus(directory, documents, seed)))
