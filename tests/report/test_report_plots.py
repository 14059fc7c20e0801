"""The report's PNG plots: valid, reproducible to the byte, and showing what they claim (anneal shaded,
every in-loop metric drawn over tokens seen)."""
from __future__ import annotations

import struct

import pytest
from matplotlib.container import BarContainer
from matplotlib.image import imread
from matplotlib.patches import Rectangle

from steps.report.plots import (
    ANNEAL_LABEL,
    downstream_by_model_figure,
    in_loop_accuracy_figure,
    in_loop_bits_per_byte_figure,
    loss_curve_figure,
    write_plots,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALL_PLOTS = {"loss_curve.png", "in_loop_accuracy.png", "in_loop_bits_per_byte.png", "downstream_by_model.png"}


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data.startswith(PNG_SIGNATURE)
    chunks, offset = [], len(PNG_SIGNATURE)
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        chunks.append((data[offset + 4:offset + 8], data[offset + 8:offset + 8 + length]))
        offset += 12 + length
    return chunks


def test_plots_are_valid_pngs_without_metadata_and_the_same_bytes_every_time(tmp_path, histories, evaluations):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    written = write_plots(first, histories, evaluations)
    assert set(written) == ALL_PLOTS and set(write_plots(second, histories, evaluations)) == ALL_PLOTS
    for name in ALL_PLOTS:
        data = (first / name).read_bytes()
        kinds = [kind for kind, _ in png_chunks(data)]
        assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
        assert b"tIME" not in kinds and not any(k in (b"tEXt", b"iTXt", b"zTXt") for k in kinds)
        height, width, _ = imread(first / name).shape
        assert width >= 600 and height >= 300
        assert data == (second / name).read_bytes()


def labelled(axes) -> dict[str, object]:
    return {artist.get_label(): artist for artist in [*axes.lines, *axes.patches, *axes.collections]}


def test_loss_curve_shades_the_anneal_after_pretraining(histories):
    axes = loss_curve_figure(histories).axes[0]
    artists = labelled(axes)
    span = artists[ANNEAL_LABEL]
    assert isinstance(span, Rectangle)
    assert (span.get_x(), span.get_x() + span.get_width()) == (20_000, 24_000)  # pretrain's last to anneal's last
    pretrain, anneal = artists["pretrain"], artists["anneal"]
    assert list(pretrain.get_xdata()) == [5_000, 10_000, 15_000, 20_000]
    assert list(anneal.get_xdata()) == [20_000, 21_000, 22_000, 23_000, 24_000]  # joined to pretraining's end
    assert list(anneal.get_ydata()) == pytest.approx([4.0, 3.4, 3.3, 3.2, 3.1])
    assert axes.get_xlabel() == "tokens seen"


def test_without_an_anneal_nothing_is_shaded(histories):
    axes = loss_curve_figure({"pretrain": histories["pretrain"]}).axes[0]
    assert ANNEAL_LABEL not in labelled(axes) and not axes.patches


def test_in_loop_accuracy_draws_every_task_and_the_average_across_both_stages(histories):
    artists = labelled(in_loop_accuracy_figure(histories).axes[0])
    assert {"arc_easy", "copa", "average", ANNEAL_LABEL} <= set(artists)
    assert list(artists["average"].get_xdata()) == [10_000, 20_000, 22_000, 24_000]
    assert list(artists["arc_easy"].get_ydata()) == pytest.approx([0.3, 0.4, 0.45, 0.45])


def test_in_loop_bits_per_byte_separates_own_sources_from_unrelated_sets(histories):
    artists = labelled(in_loop_bits_per_byte_figure(histories).axes[0])
    assert {"own held-out, all sources", "own: docs", "own: code", "unrelated: wikipedia", ANNEAL_LABEL} <= set(artists)
    assert list(artists["own held-out, all sources"].get_ydata()) == pytest.approx([3.0, 2.5, 2.3, 2.3])
    assert artists["unrelated: wikipedia"].get_linestyle() == "--"


def test_without_in_loop_evaluation_only_the_loss_and_model_plots_are_written(tmp_path, histories, evaluations):
    plain = {stage: [{k: v for k, v in r.items() if not k.startswith("eval/")} for r in h] for stage, h in histories.items()}
    assert set(write_plots(tmp_path, plain, evaluations)) == {"loss_curve.png", "downstream_by_model.png"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downstream_by_model.png", "loss_curve.png"]


def test_downstream_bars_hold_each_model_and_the_paper_markers(evaluations):
    axes = downstream_by_model_figure(evaluations).axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["arc_easy", "boolq", "average"]
    bars = {c.get_label(): [bar.get_height() for bar in c] for c in axes.containers if isinstance(c, BarContainer)}
    assert bars["base"] == pytest.approx([42.5, 50.0, 46.25]) and bars["sft"] == pytest.approx([32.5, 62.5, 47.5])
    assert list(bars) == ["base", "sft"]  # pipeline order
    paper = {c.get_label(): c.get_offsets() for c in axes.collections if c.get_label().startswith("OLMo")}
    assert list(paper["OLMo-1B"].ravel()) == pytest.approx([0, 58.1, 1, 60.7, 2, 59.4])  # the last: their average
    assert list(paper["OLMo-7B"].ravel()) == pytest.approx([0, 65.4, 1, 73.4, 2, 69.4])



def test_an_interval_bound_a_rounding_error_past_the_accuracy_still_draws(evaluations):
    evaluations["base"]["tasks"]["boolq"].update(primary=0.0, primary_ci95=[5.551115123125783e-17, 0.5615])  # Wilson, 0 of 3
    evaluations["sft"]["tasks"]["boolq"].update(primary=1.0, primary_ci95=[0.7225, 0.9999999999999999])  # 10 of 10
    axes = downstream_by_model_figure(evaluations).axes[0]
    (base, *_) = [c for c in axes.containers if isinstance(c, BarContainer)]
    assert [bar.get_height() for bar in base] == pytest.approx([42.5, 0.0, 46.25])
