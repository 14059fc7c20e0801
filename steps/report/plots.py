"""The report's PNG plots, drawn with matplotlib's Agg canvas (no pyplot state, no display).

PNGs carry no software or time metadata, so the same inputs give the same bytes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from steps.report.curves import (
    ACCURACY_SUFFIX,
    AVERAGE_ACCURACY,
    BITS_PER_BYTE_SUFFIX,
    History,
    curve_histories,
    eval_keys,
    series,
    stage_span,
)
from steps.report.evaluation_tables import PAPER_RESULTS, paper_average, task_names
from steps.report.markdown import in_stage_order

PNG_METADATA = {"Software": None}  # matplotlib writes its version there otherwise
ANNEAL_LABEL = "anneal (LR to 0)"
OWN_HELDOUT = "eval/heldout/bits_per_byte"
OWN_SOURCE_PREFIX = "eval/heldout/"


def save_png(figure: Figure, path: Path) -> None:
    figure.savefig(path, format="png", dpi=100, metadata=PNG_METADATA)


def new_axes(title: str, ylabel: str, xlabel: str = "tokens seen") -> tuple[Figure, Axes]:
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    axes = figure.add_subplot()
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    axes.grid(alpha=0.3)
    return figure, axes


def mark_anneal(axes: Axes, histories: Mapping[str, History]) -> None:
    """Shade the tokens the anneal trained on."""
    if "anneal" in histories:
        start, end = stage_span(histories["anneal"], histories.get("pretrain"))
        axes.axvspan(start, end, color="tab:orange", alpha=0.15, label=ANNEAL_LABEL)


def joined_series(histories: Mapping[str, History], key: str) -> tuple[list[int], list[float]]:
    """``key`` over tokens seen across the stages, in pipeline order."""
    tokens, values = [], []
    for history in histories.values():
        t, v = series(history, key)
        tokens += t
        values += v
    return tokens, values


def loss_curve_figure(histories: Mapping[str, History]) -> Figure | None:
    """Training loss of pretraining then the anneal over tokens seen, the anneal shaded; the anneal's line
    starts at pretraining's last point."""
    histories = curve_histories(histories)
    if not histories:
        return None
    figure, axes = new_axes("Training loss", "loss")
    start: tuple[list[int], list[float]] = ([], [])
    for stage, history in histories.items():
        tokens, losses = series(history, "loss")
        axes.plot(start[0] + tokens, start[1] + losses, label=stage)  # from where the stage before it ended
        start = ([tokens[-1]], [losses[-1]])
    mark_anneal(axes, histories)
    axes.legend()
    return figure


def eval_label(key: str, suffix: str) -> str:
    return key.removeprefix("eval/").removesuffix(suffix)


def in_loop_accuracy_figure(histories: Mapping[str, History]) -> Figure | None:
    """In-loop primary accuracy of each task and their average over tokens seen, the anneal shaded."""
    histories = curve_histories(histories)
    keys = eval_keys(histories, ACCURACY_SUFFIX)
    if not keys:
        return None
    figure, axes = new_axes("In-loop downstream accuracy (primary metric)", "accuracy")
    for key in keys:
        axes.plot(*joined_series(histories, key), marker="o", linewidth=1, label=eval_label(key, ACCURACY_SUFFIX))
    average = joined_series(histories, AVERAGE_ACCURACY)
    if average[0]:
        axes.plot(*average, marker="o", linewidth=2.5, color="black", label="average")
    axes.set_ylim(0, 1)
    mark_anneal(axes, histories)
    axes.legend(fontsize="small")
    return figure


def in_loop_bits_per_byte_figure(histories: Mapping[str, History]) -> Figure | None:
    """In-loop bits per byte on the own held-out documents (all, per source) and any other set, the anneal shaded."""
    histories = curve_histories(histories)
    keys = eval_keys(histories, BITS_PER_BYTE_SUFFIX)
    if not keys:
        return None
    figure, axes = new_axes("In-loop bits per byte", "bits per byte")
    for key in keys:
        if key == OWN_HELDOUT:
            style = {"linewidth": 2.5, "color": "black", "label": "own held-out, all sources"}
        elif key.startswith(OWN_SOURCE_PREFIX):
            style = {"linewidth": 1, "label": "own: " + eval_label(key, BITS_PER_BYTE_SUFFIX).removeprefix("heldout/")}
        else:
            style = {"linewidth": 1.5, "linestyle": "--", "label": "unrelated: " + eval_label(key, BITS_PER_BYTE_SUFFIX)}
        axes.plot(*joined_series(histories, key), marker="o", **style)
    mark_anneal(axes, histories)
    axes.legend(fontsize="small")
    return figure


def primary_bars(record: Mapping[str, Any], tasks: list[str]) -> list[tuple[int, float, float, float]]:
    """``(position, accuracy %, interval below, interval above)`` for each task of ``tasks`` the record has,
    then its average (no interval) at position ``len(tasks)``."""
    bars = []
    for position, task in enumerate(tasks):
        if task in record["tasks"]:
            m = record["tasks"][task]
            low, high = m.get("primary_ci95") or (m["primary"], m["primary"])
            # clipped at 0: a Wilson bound at 0 or 1 can miss the accuracy by a rounding error
            below, above = max(0.0, m["primary"] - low), max(0.0, high - m["primary"])
            bars.append((position, 100 * m["primary"], 100 * below, 100 * above))
    return bars + [(len(tasks), 100 * record["average"], 0.0, 0.0)]


def downstream_by_model_figure(evaluations: Mapping[str, Mapping[str, Any]]) -> Figure | None:
    """Primary accuracy (%) per task and on average for each evaluated model, 95% intervals as error bars,
    the paper's OLMo-1B/7B as markers (their average over the tasks shown)."""
    evaluations = in_stage_order(evaluations)
    tasks = task_names(evaluations)
    if not tasks:
        return None
    figure = Figure(figsize=(max(8, 1.1 * (len(tasks) + 1)), 4.5), layout="constrained")
    axes = figure.add_subplot()
    width = 0.8 / len(evaluations)
    for i, (model, record) in enumerate(evaluations.items()):
        positions, heights, below, above = zip(*primary_bars(record, tasks))
        offset = (i - (len(evaluations) - 1) / 2) * width
        axes.bar([p + offset for p in positions], heights, width, yerr=[below, above], capsize=2, label=model)
    for marker, (paper_model, results) in zip(("_", "x"), PAPER_RESULTS.items()):
        shown = [j for j, task in enumerate(tasks) if task in results]
        values = [results[tasks[j]] for j in shown] + [paper_average(paper_model, tasks)]
        axes.scatter([*shown, len(tasks)], values, marker=marker, s=200, color="black", label=paper_model)
    axes.set_xticks(range(len(tasks) + 1), [*tasks, "average"], rotation=30, ha="right")
    axes.set(title="Zero-shot accuracy (primary metric; bars: 95% interval)", ylabel="accuracy (%)", ylim=(0, 100))
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def write_plots(
    directory: Path, histories: Mapping[str, History], evaluations: Mapping[str, Mapping[str, Any]]
) -> dict[str, str]:
    """Write the plots the inputs have data for into ``directory``; ``{file name: caption}`` of those written."""
    figures = {
        "loss_curve.png": ("Training loss over tokens seen, the anneal shaded", loss_curve_figure(histories)),
        "in_loop_accuracy.png": ("In-loop downstream accuracy over tokens seen", in_loop_accuracy_figure(histories)),
        "in_loop_bits_per_byte.png": ("In-loop bits per byte over tokens seen", in_loop_bits_per_byte_figure(histories)),
        "downstream_by_model.png": ("Zero-shot accuracy of each evaluated model", downstream_by_model_figure(evaluations)),
    }
    written = {}
    for name, (caption, figure) in figures.items():
        if figure is not None:
            save_png(figure, directory / name)
            written[name] = caption
    return written
