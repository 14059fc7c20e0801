"""Language tagger: the probability that each paragraph is English, and its length-weighted mean.

Classifier: ``py3langid`` 0.4.0 (BSD-3-Clause), A. Barbaresi's fork of Lui & Baldwin's
``langid.py`` (ACL 2012): a multinomial naive Bayes model over byte n-grams, shipped inside the
package (no download), retrained by the fork for 139 languages plus ``zxx`` (not a language:
numbers, markup) on Wikipedia, Leipzig news corpora, CC-100 web text, Tatoeba sentences and the
Glot corpora. Its normalised scores are a softmax of the log-posteriors at temperature
sqrt(byte length), so P(en) is the probability of English among *all* the model's languages.

Paragraphs are the non-blank lines of ``text.split("\\n")``. Attributes of a document:
``en``: ``[start, end, P(en)]`` per paragraph; ``doc_en``: ``[0, len(text), d]`` with
``d = sum(len(p) * P_en(p)) / sum(len(p))`` (lengths in characters; 0.0 without paragraphs).
The filter removes documents below its threshold (Dolma keeps ``doc_en >= 0.5``).

Scoring many paragraphs at once: the model's tokenizer is a byte automaton that the library walks
one byte at a time in Python. Here all paragraphs of a batch walk it in lockstep with numpy (one
step per byte position, the longest paragraphs finish alone in plain Python), and the naive Bayes
scores of the whole batch are one sparse matrix product. The result equals the library's own
``LanguageIdentifier.rank`` (up to float rounding; tested), several times faster.
"""
from __future__ import annotations

from functools import cache
from typing import Iterator, NamedTuple

import numpy as np
import scipy.sparse
from py3langid.langid import MODEL_FILE, LanguageIdentifier

from steps.corpus.spans import Attributes, whole_document

LANGUAGE = "en"
LOCKSTEP_MIN_ACTIVE = 32  # below this many unfinished paragraphs, the walk goes on in plain Python
BATCH_BYTES = 1 << 22  # paragraphs scored together, in UTF-8 bytes: bounds the memory of one batch


class _Model(NamedTuple):
    identifier: LanguageIdentifier  # the library's model, for its text normalisation
    next_state: np.ndarray  # automaton transitions, indexed by row_base[state] + byte
    row_base: np.ndarray
    feature_of_state: np.ndarray  # the n-gram feature a state emits, or -1
    log_likelihoods: np.ndarray  # (features, classes) float32
    log_priors: np.ndarray  # (classes,)
    language_columns: np.ndarray  # the class columns labelled LANGUAGE (aliases fold into one label)


@cache
def _model() -> _Model:
    """The bundled model, loaded once per process."""
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _Model(
        identifier=identifier,
        next_state=np.asarray(identifier.tk_nextmove),
        row_base=np.asarray(identifier.tk_row, dtype=np.int64) << 8,
        feature_of_state=np.asarray(identifier.tk_output, dtype=np.int64),
        log_likelihoods=np.asarray(identifier.nb_ptc, dtype=np.float32),
        log_priors=np.asarray(identifier.nb_pc, dtype=np.float32),
        language_columns=np.flatnonzero(np.asarray(identifier.nb_classes) == LANGUAGE),
    )


def _walk_rest(model: _Model, data: bytes, position: int, state: int, features: list[int]) -> None:
    """Walk the automaton from ``state`` over ``data[position:]``, appending emitted features."""
    identifier = model.identifier  # its Python sequences index faster than numpy arrays, one at a time
    next_state, row_base, feature_of_state = identifier.tk_nextmove, identifier._rowbase, identifier.tk_output
    for byte in data[position:]:
        state = next_state[row_base[state] + byte]
        feature = feature_of_state[state]
        if feature >= 0:
            features.append(feature)


def _feature_visits(model: _Model, encoded: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """``(row, feature)`` for every feature the automaton emits on each encoded text."""
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    order = np.argsort(-lengths, kind="stable")  # longest first: the unfinished rows are a prefix
    sorted_lengths = lengths[order]
    flat = np.frombuffer(b"".join(encoded[i] for i in order), dtype=np.uint8)
    starts = np.cumsum(sorted_lengths) - sorted_lengths
    states = np.zeros(len(encoded), dtype=np.int64)
    rows, features = [], []
    position, active = 0, int(np.count_nonzero(sorted_lengths))
    while active >= LOCKSTEP_MIN_ACTIVE:
        live = states[:active]
        live[:] = model.next_state[model.row_base[live] + flat[starts[:active] + position]]
        emitted = model.feature_of_state[live]
        hit = np.flatnonzero(emitted >= 0)
        rows.append(order[hit])
        features.append(emitted[hit])
        position += 1
        active = int(np.count_nonzero(sorted_lengths[:active] > position))
    for rank in range(active):
        rest: list[int] = []
        _walk_rest(model, encoded[order[rank]], position, int(states[rank]), rest)
        rows.append(np.full(len(rest), order[rank], dtype=np.int64))
        features.append(np.asarray(rest, dtype=np.int64))
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(rows), np.concatenate(features)


def _batches(encoded: list[bytes], max_bytes: int) -> Iterator[list[bytes]]:
    """Consecutive runs of ``encoded`` of at most ``max_bytes`` in all (or one longer text)."""
    batch: list[bytes] = []
    size = 0
    for data in encoded:
        if batch and size + len(data) > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(data)
        size += len(data)
    if batch:
        yield batch


def _english_probabilities(model: _Model, encoded: list[bytes]) -> np.ndarray:
    rows, features = _feature_visits(model, encoded)
    counts = scipy.sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, features)),
        shape=(len(encoded), len(model.log_likelihoods)),
    )  # duplicates summed
    counts.data = np.log1p(counts.data)
    scores = np.asarray(counts @ model.log_likelihoods) + model.log_priors
    scores[np.diff(counts.indptr) == 0] = 0.0  # no feature at all: the library's uniform answer
    scores /= np.sqrt(np.maximum([len(e) for e in encoded], 1))[:, None]
    probabilities = np.exp(scores - scores.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return probabilities[:, model.language_columns].sum(axis=1).astype(np.float64)


def english_probabilities(paragraphs: list[str]) -> np.ndarray:
    """P(English) of each text, as ``py3langid`` computes it with normalised probabilities."""
    if not paragraphs:
        return np.zeros(0)
    model = _model()
    encoded = [model.identifier._encode(p) for p in paragraphs]
    return np.concatenate([_english_probabilities(model, batch) for batch in _batches(encoded, BATCH_BYTES)])


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each non-blank line of ``text.split("\\n")``."""
    spans, start = [], 0
    for line in text.split("\n"):
        end = start + len(line)
        if line.strip():
            spans.append((start, end))
        start = end + 1
    return spans


def _attributes(text: str, spans: list[tuple[int, int]], scores: np.ndarray) -> Attributes:
    lengths = [end - start for start, end in spans]
    total = sum(lengths)
    document_score = float(np.dot(lengths, scores)) / total if total else 0.0
    return {
        "en": [[start, end, float(score)] for (start, end), score in zip(spans, scores)],
        "doc_en": whole_document(text, document_score),
    }


def language_attributes_batch(texts: list[str]) -> list[Attributes]:
    """:func:`language_attributes` of every text, all paragraphs scored together."""
    spans = [paragraph_spans(text) for text in texts]
    scores = english_probabilities([text[s:e] for text, doc in zip(texts, spans) for s, e in doc])
    results, position = [], 0
    for text, doc in zip(texts, spans):
        results.append(_attributes(text, doc, scores[position : position + len(doc)]))
        position += len(doc)
    return results


def language_attributes(text: str) -> Attributes:
    """``{"en": [[start, end, P(en)] per paragraph], "doc_en": [[0, len(text), mean]]}``."""
    return language_attributes_batch([text])[0]
