"""report.md: the evaluation tables, the own-vs-unrelated bits-per-byte verdict, the plots it links, the variants."""
from __future__ import annotations

import re

import pytest

from steps.report.evaluation_tables import evaluation_table, heldout_section, metrics_table, own_versus_unrelated
from steps.report.plots import write_plots
from steps.report.render import render_report
from steps.report.variants import variants_table


def rows(markdown: str) -> dict[str, list[str]]:
    """A markdown table's rows by first cell."""
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines() if line.startswith("|")]
    return {row[0]: row[1:] for row in cells}


def test_the_task_table_gives_each_models_primary_accuracy_with_its_interval_and_the_papers(evaluations):
    table = evaluation_table(evaluations)
    assert table.splitlines()[0] == "| task | metric | base | sft | OLMo-1B | OLMo-7B |"  # pipeline order
    by_task = rows(table)
    assert by_task["arc_easy"] == ["acc_uncond", "42.5 (30.0–60.0)", "32.5 (20.0–45.0)", "58.1", "65.4"]
    assert by_task["boolq †"] == ["acc_raw", "50.0 (35.0–65.0)", "62.5 (47.0–76.0)", "60.7", "73.4"]  # OLMES prompts
    assert by_task["**average**"] == ["", "46.2", "47.5", "59.4", "69.4"]  # the paper's over the tasks shown
    assert by_task["bits per byte (own held-out)"] == ["", "1.7", "1.9", "", ""]


def test_tasks_scored_with_olmes_prompts_unlike_the_papers_are_marked_and_explained_under_the_table(evaluations):
    table, note = evaluation_table(evaluations).split("\n\n")
    assert "boolq †" in rows(table) and "arc_easy" in rows(table)  # ARC's OLMES prompts are the paper's
    assert note == ("† Our scores on boolq use OLMES prompts (OLMo's evaluation harness, the oe_eval requests that "
                    "`source: 'auto'` reads), while the paper's OLMo-1B and OLMo-7B numbers beside them used Catwalk's "
                    "prompts, so those rows do not compare like with like (`source: 'hf'` scores with the paper's prompts).")
    assert note in render_report("t", {}, {}, evaluations, None, None, {})


def test_no_mark_when_every_model_used_the_papers_prompts_for_the_task(evaluations):
    for record in evaluations.values():
        record["tasks"]["boolq"]["prompt_source"] = "hf"
    table = evaluation_table(evaluations)
    assert "boolq" in rows(table) and "†" not in table


def test_the_note_names_the_models_when_only_some_used_olmes_prompts(evaluations):
    evaluations["sft"]["tasks"]["boolq"]["prompt_source"] = "hf"
    for record in evaluations.values():
        record["tasks"]["piqa"] = {**record["tasks"]["boolq"]}
    evaluations["sft"]["tasks"]["piqa"]["prompt_source"] = "oe_eval"
    del evaluations["base"]["tasks"]["piqa"]["prompt_source"]  # not recorded: what 'auto' read, OLMES
    table, note = evaluation_table(evaluations).split("\n\n")
    assert {"boolq †", "piqa †"} <= set(rows(table))
    assert note.startswith("† Our scores on boolq (base) and piqa (base, sft) use OLMES prompts")


def test_every_normalization_is_shown_with_the_primary_one_marked(evaluations):
    by_task = rows(metrics_table(evaluations["base"]))
    assert by_task["task"] == ["questions", "acc_raw", "acc_per_token", "acc_per_char", "acc_uncond", "primary (95% CI)"]
    assert by_task["arc_easy"] == ["40", "35.0", "37.5", "40.0", "42.5*", "42.5 (30.0–60.0)"]
    assert by_task["boolq"] == ["40", "50.0*", "52.5", "55.0", "57.5", "50.0 (35.0–65.0)"]


@pytest.mark.parametrize("own, unrelated, verdict", [
    (1.5, 2.5, "lower on its own sources."),
    (2.5, 1.5, "lower on wikipedia than on its own sources."),
])
def test_the_report_says_which_of_own_sources_and_unrelated_set_has_the_lower_bits_per_byte(own, unrelated, verdict):
    record = {"bits_per_byte": own, "bits_per_byte_by_set": {"wikipedia": unrelated}}
    (sentence,) = own_versus_unrelated("base", record)
    assert sentence == (f"base: {own} bits per byte on held-out documents of its own sources, "
                        f"{unrelated} on wikipedia: {verdict}")


def test_the_heldout_table_lists_own_sources_then_unrelated_sets(evaluations):
    section = heldout_section(evaluations)
    by_row = rows(section)
    assert by_row["documents"] == ["base", "sft"]
    assert by_row["own held-out, all sources"] == ["1.7", "1.9"]
    assert by_row["own held-out: code"] == ["1.75", "2"] and by_row["own held-out: docs"] == ["1.65", "1.8"]
    assert by_row["unrelated: wikipedia"] == ["2.75", "2.9"]
    assert "- base: 1.7 bits per byte on held-out documents of its own sources, 2.75 on wikipedia: lower on its own" in section


def test_without_unrelated_sets_the_section_says_so(evaluations):
    for record in evaluations.values():
        del record["bits_per_byte_by_set"]
    section = heldout_section(evaluations)
    assert "No unrelated set was evaluated" in section and "unrelated:" not in section


def test_the_report_links_every_plot_beside_it_and_keeps_the_other_sections(tmp_path, histories, evaluations):
    plots = write_plots(tmp_path, histories, evaluations)
    training = {"pretrain": {"step": 20, "tokens_seen": 20_000, "loss_first": 8.5, "loss_last": 4.0},
                "anneal": {"step": 24, "tokens_seen": 24_000, "loss_first": 3.4, "loss_last": 3.1}}
    report = render_report("made-up", {}, training, evaluations, None, None, {"pretrain": "abc"}, plots)
    links = re.findall(r"!\[([^\]]+)\]\(([^)]+)\)", report)
    assert sorted(target for _, target in links) == sorted(plots)
    assert all((tmp_path / target).is_file() for _, target in links)
    assert ("Training loss over tokens seen, the anneal shaded", "loss_curve.png") in links
    for section in ("## Evaluation", "### Held-out bits per byte", "#### base", "## Corpus", "## Tokens", "## Training",
                    "### In-loop evaluation", "## Fingerprints"):
        assert section in report
    assert report.index("(downstream_by_model.png)") < report.index("## Corpus") < report.index("(loss_curve.png)")
    assert "## Variants" not in report


def test_without_plots_the_report_says_there_was_no_in_loop_evaluation(evaluations):
    report = render_report("made-up", {}, {}, evaluations, None, None, {})
    assert "No in-loop evaluation in this run" in report and "![" not in report


def test_variants_are_set_side_by_side_with_their_difference_from_the_first(evaluations):
    baseline = {"training": {"pretrain": {"loss_last": 4.0, "tokens_seen": 20_000}},
                "evaluations": {"base": evaluations["base"]}}
    variant = {"training": {"pretrain": {"loss_last": 3.75, "tokens_seen": 20_000}},
               "evaluations": {"base": evaluations["sft"]}}
    table = variants_table({"olmo-tiny": baseline, "cosine-schedule": variant})
    by_row = rows(table)
    assert by_row[""] == ["olmo-tiny", "cosine-schedule", "cosine-schedule − olmo-tiny"]
    assert by_row["pretrain: last loss"] == ["4.0000", "3.7500", "-0.2500"]
    assert by_row["pretrain: tokens seen"] == ["20,000", "20,000", "+0"]
    assert by_row["base model: arc_easy (%)"] == ["42.5", "32.5", "-10.0"]
    assert by_row["base model: boolq (%)"] == ["50.0", "62.5", "+12.5"]
    assert by_row["base model: average (%)"] == ["46.2", "47.5", "+1.2"]
    assert by_row["base model: bits per byte, own held-out"] == ["1.7000", "1.9000", "+0.2000"]
    assert by_row["base model: bits per byte, wikipedia"] == ["2.7500", "2.9000", "+0.1500"]


def test_a_stage_only_one_variant_has_leaves_the_others_blank(evaluations):
    table = variants_table({"a": {"evaluations": {"base": evaluations["base"]}},
                            "b": {"evaluations": {"base": evaluations["base"], "sft": evaluations["sft"]}}})
    assert rows(table)["sft model: average (%)"] == ["", "47.5", ""]
