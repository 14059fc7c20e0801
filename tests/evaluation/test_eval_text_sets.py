import pytest

from steps.evaluation.perplexity import read_paloma_documents
from steps.common.tasks import load_task
from steps.evaluation.text_sets import task_passages, write_text_set


def test_boolq_passages_become_a_paloma_set_of_distinct_texts(tmp_path):
    passages = task_passages("boolq", "passage", 25)
    assert len(passages) == len(set(passages)) == 25
    contexts = {q.contexts[0] for q in load_task("boolq", limit=300, source="hf")}
    assert sum(any(context.startswith(p) for p in passages) for context in contexts) > 0  # the passages of BoolQ
    path = write_text_set(tmp_path, "wikipedia", "boolq", passages)
    assert path == tmp_path / "val" / "val_boolq.jsonl.gz"
    docs = list(read_paloma_documents(tmp_path, "wikipedia"))
    assert [d["text"] for d in docs] == passages
    assert {d["source"] for d in docs} == {"wikipedia"} and {d["metadata"]["domain"] for d in docs} == {"boolq"}


def test_a_field_the_task_lacks_names_the_fields_it_has():
    with pytest.raises(ValueError, match="no field 'support'; they have .*passage"):
        task_passages("boolq", "support", 5)
