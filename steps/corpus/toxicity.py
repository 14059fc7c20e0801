"""Toxicity / NSFW tagger: the probability that each sentence is toxic or offensive.

Classifier: ``alt-profanity-check`` 1.9.1 (MIT), the maintained fork of Victor Zhou's
``profanity-check``: a TF-IDF bag of words (English stop words removed) and a linear SVM with
probabilities calibrated by ``CalibratedClassifierCV``, both shipped inside the package (no
download), trained with scikit-learn 1.9.1 on about 200k human-labelled texts: the Jigsaw/Kaggle
Toxic Comment Classification Challenge (Wikipedia talk-page comments labelled toxic, obscene,
insult, ...) and Davidson et al.'s hate speech and offensive language tweets (ICWSM 2017). Its
label is "offensive", which covers the insults, slurs and obscene/sexual language that Dolma's two
fastText sentence classifiers (hate speech, NSFW; both trained on Jigsaw) removed. Those two and
``detoxify`` (transformers) download their weights at run time, which an offline pipeline cannot;
popular offline filters such as ``better-profanity`` are word lists, not trained classifiers.

Sentences: within each line, a sentence is a run of text that ends at a ``.``, ``!`` or ``?``
(repeated, optionally followed by closing quotes or brackets) followed by whitespace, or at the
line's end; spans exclude the surrounding whitespace. Attributes of a document: ``sentences``:
``[start, end, P(toxic)]`` for every sentence; ``max_score``: ``[0, len(text), max]`` (0.0 for a
text without sentences). The filter deletes sentences at or above its threshold (Dolma: 0.4).
"""
from __future__ import annotations

import re
from functools import cache
from typing import Callable

import numpy as np

from steps.corpus.spans import Attributes, whole_document

SENTENCE = re.compile(r"""\S(?:[^\n]*?[.!?]+["'”’)\]]*(?=\s)|[^\n]*\S)?""")


@cache
def _classifier() -> Callable[[list[str]], np.ndarray]:
    """P(offensive) of each text: the package's vectorizer and model, loaded once per process.

    ``profanity_check.predict_prob`` computes the same, but picks the column with a Python call per
    row (``np.apply_along_axis``); one array slice does it for a whole batch.
    """
    from profanity_check.profanity_check import model, vectorizer  # loads the model files on import

    positive = list(model.classes_).index(1)
    return lambda texts: model.predict_proba(vectorizer.transform(texts))[:, positive]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence of ``text``, in order."""
    return [match.span() for match in SENTENCE.finditer(text)]


def toxicity_attributes_batch(texts: list[str]) -> list[Attributes]:
    """:func:`toxicity_attributes` of every text, all sentences classified in one call."""
    spans = [sentence_spans(text) for text in texts]
    sentences = [text[s:e] for text, doc in zip(texts, spans) for s, e in doc]
    scores = _classifier()(sentences).tolist() if sentences else []
    results, position = [], 0
    for text, doc in zip(texts, spans):
        doc_scores = scores[position : position + len(doc)]
        position += len(doc)
        results.append({
            "sentences": [[start, end, score] for (start, end), score in zip(doc, doc_scores)],
            "max_score": whole_document(text, max(doc_scores, default=0.0)),
        })
    return results


def toxicity_attributes(text: str) -> Attributes:
    """``{"sentences": [[start, end, P(toxic)], ...], "max_score": [[0, len(text), max]]}``."""
    return toxicity_attributes_batch([text])[0]
