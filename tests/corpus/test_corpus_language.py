"""The language tagger: P(English) per paragraph and its length-weighted mean."""
import random

import pytest
from py3langid.langid import MODEL_FILE, LanguageIdentifier

from steps.corpus import language
from steps.corpus.language import (
    LOCKSTEP_MIN_ACTIVE, english_probabilities, language_attributes, language_attributes_batch,
)

ENGLISH = (
    "The library opens at nine in the morning and closes late in the evening, so students can study after work.\n"
    "Most of the books on the second floor are about history, and the staff will help you find what you need."
)
GERMAN = (
    "Die Bibliothek öffnet um neun Uhr morgens und schließt erst spät am Abend, damit die Studenten nach der Arbeit "
    "lernen können. Die meisten Bücher im zweiten Stock handeln von Geschichte."
)
FRENCH = (
    "La bibliothèque ouvre à neuf heures du matin et ferme tard le soir, afin que les étudiants puissent travailler "
    "après leur journée. La plupart des livres du deuxième étage parlent d'histoire."
)


def doc_en(text: str) -> float:
    return language_attributes(text)["doc_en"][0][2]


def test_english_prose_scores_high():
    assert doc_en(ENGLISH) > 0.9


@pytest.mark.parametrize("text", [GERMAN, FRENCH])
def test_german_and_french_prose_score_low(text):
    assert doc_en(text) < 0.2


def test_document_score_is_the_length_weighted_mean_of_paragraph_scores():
    text = f"{ENGLISH}\n\n{GERMAN}\n   \n{FRENCH}\n"
    attributes = language_attributes(text)
    paragraphs = attributes["en"]
    assert len(paragraphs) == 4  # two English lines, the German and the French paragraph
    weighted = sum((end - start) * score for start, end, score in paragraphs)
    expected = weighted / sum(end - start for start, end, _ in paragraphs)
    assert attributes["doc_en"] == [[0, len(text), pytest.approx(expected, rel=1e-12)]]
    assert [score > 0.9 for _, _, score in paragraphs] == [True, True, False, False]
    assert 0.2 < expected < 0.8


def test_paragraph_offsets_point_at_the_non_blank_lines():
    text = "\n  \nFirst paragraph here.\n\nSecond one, with words.\n\t\nlast"
    spans = language_attributes(text)["en"]
    assert [text[start:end] for start, end, _ in spans] == ["First paragraph here.", "Second one, with words.", "last"]


@pytest.mark.parametrize("text", ["", "\n\n", "   \n\t"])
def test_text_without_paragraphs_scores_zero(text):
    assert language_attributes(text) == {"en": [], "doc_en": [[0, len(text), 0.0]]}


def test_batch_equals_one_document_at_a_time():
    texts = [ENGLISH, "", GERMAN, f"{FRENCH}\n{ENGLISH}", "ok"]
    assert language_attributes_batch(texts) == [language_attributes(text) for text in texts]


def test_probabilities_equal_py3langid_on_both_walks(monkeypatch):
    # Enough paragraphs of spread-out lengths that the lockstep walk runs, and the longest ones
    # finish in the plain-Python walk; texts the library treats specially: featureless, all upper case.
    rng = random.Random(0)
    words = (ENGLISH + " " + GERMAN + " " + FRENCH).split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 80))) for _ in range(3 * LOCKSTEP_MIN_ACTIVE)]
    texts += ["", "12", "THE LIBRARY OPENS AT NINE", "日本語の文章です。", "x" * 3000]
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    expected = [dict(identifier.rank(text))["en"] for text in texts]
    assert english_probabilities(texts).tolist() == pytest.approx(expected, abs=1e-4)  # float32 sums in another order
    monkeypatch.setattr(language, "BATCH_BYTES", 200)  # many small batches give the same answer
    assert english_probabilities(texts).tolist() == pytest.approx(expected, abs=1e-4)  # float32 sums in another order
