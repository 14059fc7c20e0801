"""The toxicity tagger: a probability of being toxic per sentence, and the document's maximum."""
import pytest
from profanity_check import predict_prob

from steps.corpus.toxicity import sentence_spans, toxicity_attributes, toxicity_attributes_batch

ABUSIVE = "You are a worthless piece of shit, shut up you stupid idiot."
NEUTRAL = "The committee met on Tuesday to discuss the budget for next year."


def test_abusive_sentence_scores_high_and_neutral_sentence_low():
    text = f"{NEUTRAL} {ABUSIVE}"
    (neutral, abusive) = toxicity_attributes(text)["sentences"]
    assert neutral[2] < 0.4 <= abusive[2]
    assert toxicity_attributes(text)["max_score"] == [[0, len(text), abusive[2]]]


def test_sentence_offsets_recover_the_sentences():
    text = 'Hello world. How are you?!  Fine\n\n  He said "stop." Then left... Pi is 3.14 today.\nno end  '
    assert [text[s:e] for s, e in sentence_spans(text)] == [
        "Hello world.", "How are you?!", "Fine", 'He said "stop."', "Then left...", "Pi is 3.14 today.", "no end",
    ]
    spans = toxicity_attributes(text)["sentences"]
    assert [(s, e) for s, e, _ in spans] == sentence_spans(text)


def test_scores_are_the_classifiers_probabilities():
    text = f"{NEUTRAL}\n{ABUSIVE} I like tea."
    scores = [score for _, _, score in toxicity_attributes(text)["sentences"]]
    assert scores == pytest.approx(predict_prob([NEUTRAL, ABUSIVE, "I like tea."]).tolist(), abs=1e-12)


@pytest.mark.parametrize("text", ["", "  \n\t "])
def test_text_without_sentences(text):
    assert toxicity_attributes(text) == {"sentences": [], "max_score": [[0, len(text), 0.0]]}


def test_batch_equals_one_document_at_a_time():
    texts = [ABUSIVE, "", f"{NEUTRAL}\n\n{ABUSIVE}", NEUTRAL]
    assert toxicity_attributes_batch(texts) == [toxicity_attributes(text) for text in texts]
