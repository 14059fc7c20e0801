import functools

import pytest
import torch

from olmo_model import Olmo, OlmoConfig
from steps.evaluation.scorer import LogLikelihoodScorer, encode, sum_target_logprobs


def bigram_sum(model, tokens, first_scored):
    return sum(model.logprob(tokens[i - 1], tokens[i]) for i in range(first_scored, len(tokens)))


def test_sums_the_continuation_logprobs_given_the_context(bigram, char_tokenizer):
    scorer = LogLikelihoodScorer(bigram, char_tokenizer, batch_size=2)
    pairs = [("abc", " de"), ("question:", " yes"), ("a", " b"), ("", " no")]
    scores = scorer.score(pairs)
    for (context, continuation), (total, count) in zip(pairs, scores):
        tokens = (char_tokenizer.encode(context) or [0]) + char_tokenizer.encode(continuation)
        assert count == len(continuation)
        assert total == pytest.approx(bigram_sum(bigram, tokens, len(tokens) - count), abs=1e-5)


def test_batches_longest_first_padded_to_the_batch_maximum(bigram, char_tokenizer):
    """Inputs of 15, 14, 13, 9, 8 and 5 tokens in batches of up to 2: the 9 does not join the 13 nor the 5 the 8
    (each would be padded by more than a third)."""
    pairs = [("abcdefg", " hi"), ("a", " bcdefghijklmno"), ("xyz", " ab"), ("abcd", " efghijklm"),
             ("ab", " cdefghijklmn"), ("abc", " defgh")]
    LogLikelihoodScorer(bigram, char_tokenizer, batch_size=2).score(pairs)
    assert bigram.input_shapes == [(2, 15), (1, 13), (2, 9), (1, 5)]


def test_identical_pairs_are_scored_once(bigram, char_tokenizer):
    scores = LogLikelihoodScorer(bigram, char_tokenizer, batch_size=8).score([("ab", " c"), ("ab", " c"), ("ba", " c")])
    assert scores[0] == scores[1]
    assert bigram.input_shapes == [(2, 3)]


def test_context_is_cut_from_the_left_to_fit_the_window(make_bigram, char_tokenizer):
    model = make_bigram(max_sequence_length=6)
    scorer = LogLikelihoodScorer(model, char_tokenizer)
    (total, count), = scorer.score([("abcdefghij", " xyz")])
    tokens = char_tokenizer.encode("hij xyz")  # 7 tokens: 6 fed to the model, 4 scored
    assert count == 4 and model.input_shapes == [(1, 6)]
    assert total == pytest.approx(bigram_sum(model, tokens, 3), abs=1e-5)
    with pytest.raises(ValueError, match="does not fit"):
        scorer.score([("a", " abcdefghijkl")])


def test_joint_tokenization_splits_the_joint_encoding_at_the_context(olmo_tokenizer, micro_model):
    scorer = LogLikelihoodScorer(micro_model, olmo_tokenizer, tokenization="joint")
    context, continuation = "Question: Is the sky blue?\nAnswer: ", "yes"
    context_ids, continuation_ids = scorer.tokenize(context, continuation)
    stripped = encode(olmo_tokenizer, context.rstrip())
    assert context_ids == stripped
    assert continuation_ids == encode(olmo_tokenizer, context + continuation)[len(stripped):]
    assert continuation_ids == encode(olmo_tokenizer, " yes")
    separate = LogLikelihoodScorer(micro_model, olmo_tokenizer)
    assert separate.tokenize(context, continuation)[1] == encode(olmo_tokenizer, "yes")


def test_matches_a_naive_full_logits_computation_on_olmo_micro(olmo_tokenizer, micro_model):
    pairs = [
        ("Question: Which gas do plants take in?\nAnswer:", " carbon dioxide"),
        ("Question: Which gas do plants take in?\nAnswer:", " oxygen"),
        ("Roof shingle removal: A man is sitting on a roof. He", " starts pulling up roofing on a roof."),
        ("Answer:", " oxygen"),
        ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases."),
    ]
    batched = LogLikelihoodScorer(micro_model, olmo_tokenizer, batch_size=3).score(pairs)
    single_scorer = LogLikelihoodScorer(micro_model, olmo_tokenizer, batch_size=1)
    one_by_one = [single_scorer.score([pair])[0] for pair in pairs]
    with torch.no_grad():
        for (context, continuation), (total, count), (single, single_count) in zip(pairs, batched, one_by_one):
            context_ids, continuation_ids = encode(olmo_tokenizer, context), encode(olmo_tokenizer, continuation)
            tokens = torch.tensor([context_ids + continuation_ids])
            logprobs = torch.log_softmax(micro_model(tokens[:, :-1]).double(), dim=-1)[0]
            positions = range(len(context_ids) - 1, tokens.shape[1] - 1)
            naive = sum(logprobs[p, tokens[0, p + 1]].item() for p in positions)
            assert count == single_count == len(continuation_ids)
            assert total == pytest.approx(naive, abs=1e-4)
            assert single == pytest.approx(naive, abs=1e-4)


def test_rejects_bad_settings(bigram, char_tokenizer):
    with pytest.raises(ValueError, match="tokenization"):
        LogLikelihoodScorer(bigram, char_tokenizer, tokenization="merged")
    with pytest.raises(ValueError, match="batch_size"):
        LogLikelihoodScorer(bigram, char_tokenizer, batch_size=0)


def recording_hidden_states(model):
    """Record ``(input shape, packed or not)`` of each call of ``model.hidden_states``, keeping its signature."""
    calls, original = [], model.hidden_states

    @functools.wraps(original)
    def hidden_states(input_ids, **kwargs):
        calls.append((tuple(input_ids.shape), bool(kwargs)))
        return original(input_ids, **kwargs)

    model.hidden_states = hidden_states
    return calls


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_shared_contexts_give_the_logprobs_of_each_pair_alone(char_tokenizer, dtype, tolerance):
    torch.manual_seed(0)
    model = Olmo(OlmoConfig.preset("olmo-micro", max_sequence_length=16)).to(dtype)
    long_context = "the question: which one is it?"  # cut from the left, differently for each length below
    pairs = [
        ("question: is it", " yes"), ("question: is it", " no"), ("question: is it", "."), ("question: is it", "?"),
        ("a b", " cde"), ("a b", " c"), ("a b", "c"), ("a b", " cdefghi"), ("a b", " cdefghijklm"),
        (long_context, " abc"), (long_context, " xyz"), (long_context, " a"), (long_context, "a"),
        (long_context, " abcdefghijklmno"), ("", " no"), ("", " yes"), ("", "n"),
    ]
    scorer = LogLikelihoodScorer(model, char_tokenizer, device=None, batch_size=3)
    calls = recording_hidden_states(model)
    shared = scorer.score(pairs)
    alone = [sum_target_logprobs(model, [scorer.request(*pair)], "cpu", batch_size=1)[0] for pair in pairs]
    assert [count for _, count in shared] == [len(continuation) for _, continuation in pairs]
    assert [total for total, _ in shared] == pytest.approx(alone, abs=tolerance, rel=0)
    shared_calls = calls[:len(calls) - len(pairs)]
    assert any(packed for _, packed in shared_calls)  # several multi-token continuations in one row
    assert sum(batch * width for (batch, width), _ in shared_calls) < sum(
        len(scorer.request(*pair)[0]) - 1 for pair in pairs
    )


def test_a_model_without_packed_rows_shares_contexts_among_single_token_continuations(bigram, char_tokenizer):
    pairs = [("abc", "d"), ("abc", " de"), ("abc", "e"), ("abc", " fg"), ("abcd", "e")]
    scores = LogLikelihoodScorer(bigram, char_tokenizer, batch_size=4).score(pairs)
    for (context, continuation), (total, count) in zip(pairs, scores):
        tokens = char_tokenizer.encode(context + continuation)
        assert total == pytest.approx(bigram_sum(bigram, tokens, len(context)), abs=1e-5)
    # "abc" + " de" (with "d" and "e" scored from "c"), "abc" + " fg", "abcd": one run of each context per row
    assert bigram.input_shapes == [(3, 5)]


def test_olmo_rejects_packed_positions_outside_its_window(micro_model):
    input_ids = torch.zeros(1, 4, dtype=torch.long)
    mask = torch.ones(1, 4, 4, dtype=torch.bool).tril()
    too_far = torch.tensor([[0, 1, 2, micro_model.config.max_sequence_length]])
    with pytest.raises(ValueError, match="position_ids must lie in"):
        micro_model.hidden_states(input_ids, position_ids=too_far, attention_mask=mask)
    with pytest.raises(ValueError, match="together"):
        micro_model.hidden_states(input_ids, position_ids=torch.arange(4)[None])
