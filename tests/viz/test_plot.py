"""Figures (layout, titles, colour bars, the one colour rule) and the notebook views, with known answers.

Everything is built from hand-made Explanations: no models, milliseconds per test.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
from helpers import random_images
from test_explanation import make_explanation

import xai_bridge as xb
from xai_bridge import Norm
from xai_bridge.viz.colors import RED, SEQUENTIAL
from xai_bridge.viz.plot import MapScale, Style, caption_plot, comparison_grid, figure_png, overlay

H, W = 6, 8


def ramp(scale: float = 1.0) -> np.ndarray:
    """A positive ramp ``1..H*W`` (H, W), times ``scale``."""
    return (np.arange(H * W, dtype=np.float32).reshape(H, W) + 1) * scale


def exp_of(
    maps: np.ndarray, method: str = "lib.A", images: np.ndarray | None = None, targets: np.ndarray | None = None
) -> xb.Explanation:
    """An Explanation of ``maps`` (N, T, H, W) over white images unless given."""
    maps = np.asarray(maps, np.float32)
    n, t = maps.shape[:2]
    images = np.full((n, *maps.shape[2:], 3), 255, np.uint8) if images is None else images
    targets = np.arange(n * t).reshape(n, t) if targets is None else targets
    return xb.Explanation(
        attributions=maps,
        images=images,
        targets=targets,
        target_names=[[f"class {c}" for c in row] for row in np.asarray(targets)],
        scores=np.full((n, t), 0.5),
        method=method,
        library="lib",
    )


def panels(fig) -> list:
    """The image panels of a figure in row-major order (the colour bar excluded)."""
    return [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]


def pixels(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array(), np.float64)


# ------------------------------------------------------------------ figures


def test_grid_layout_titles_labels_and_colour_bar() -> None:
    exp = make_explanation()  # 2 images x 3 targets, 5 x 6 pixels
    fig = comparison_grid({"captum.Saliency": exp, "gradcam.GradCAM": dataclasses.replace(exp, method="x")})
    image_axes = panels(fig)
    assert len(image_axes) == 2 * (1 + 2)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and len(fig.axes) == 2 * 3 + 1
    assert [ax.get_title() for ax in image_axes[:3]] == ["image", "captum\nSaliency", "gradcam\nGradCAM"]
    assert all(ax.get_title() == "" for ax in image_axes[3:])  # titles on the first row only
    assert image_axes[1].get_xlabel() == "class 0" and image_axes[4].get_xlabel() == "class 3"
    assert np.array_equal(pixels(image_axes[3]), exp.images[1])  # first column: the image itself
    # both maps have negative values (make_explanation draws normals): signed, on the diverging scale
    assert bars[0].get_ylim() == (-1.0, 1.0) and bars[0].get_ylabel().startswith("signed (red for, blue against)")
    assert "clipped at the 99th percentile of |value|, per map" in bars[0].get_ylabel()
    assert fig.xai_bridge_norm == {"norm": "signed", "percentile": 99.0, "scale": "map"}


def test_grid_per_target_has_a_column_per_method_and_target() -> None:
    exp = make_explanation()
    fig = comparison_grid([exp, dataclasses.replace(exp, method="lib.B")], per_target=True)
    image_axes = panels(fig)
    assert len(image_axes) == 2 * (1 + 2 * 3)
    titles = [ax.get_title() for ax in image_axes[:7]]
    assert titles[1:4] == [f"captum\nIntegratedGradients [{t}]" for t in range(3)]
    assert titles[4:] == [f"lib\nB [{t}]" for t in range(3)]
    assert [ax.get_xlabel() for ax in image_axes[8:11]] == ["class 3", "class 4", "class 5"]


def test_identical_maps_under_other_names_draw_identical_pixels() -> None:
    exp = make_explanation()
    for scale in MapScale:
        fig = comparison_grid({"a": exp, "b": dataclasses.replace(exp, method="b")}, scale=scale)
        ax = panels(fig)
        for row in range(2):
            assert np.array_equal(pixels(ax[3 * row + 1]), pixels(ax[3 * row + 2]))


def test_heat_overlay_applies_the_stated_rule() -> None:
    exp = make_explanation()
    fig = comparison_grid(exp, norm="abs", percentile=90.0)
    for row in range(2):
        m = exp.attributions[row, 0]
        expected = overlay(exp.images[row], np.clip(np.abs(m) / np.percentile(np.abs(m), 90.0), 0, 1), "heat")
        np.testing.assert_allclose(pixels(panels(fig)[2 * row + 1]), expected, atol=1e-6)


def test_figure_scale_keeps_relative_brightness_and_map_scale_does_not() -> None:
    # MASKED over a white image draws the normalised value itself, so brightness is measurable.
    exps = {"small": exp_of(ramp()[None, None]), "big": exp_of(ramp(10.0)[None, None], "big")}
    fig = comparison_grid(exps, style="masked", scale="figure", percentile=None)
    small, big = pixels(panels(fig)[1]), pixels(panels(fig)[2])
    np.testing.assert_allclose(big, 10 * small, atol=1e-6)
    assert big.max() == pytest.approx(1.0)
    assert fig.xai_bridge_norm == {"norm": "abs", "percentile": None, "scale": "figure"}
    fig = comparison_grid(exps, style="masked", scale="map", percentile=None)
    np.testing.assert_allclose(pixels(panels(fig)[1]), pixels(panels(fig)[2]), atol=1e-6)
    assert fig.xai_bridge_norm["scale"] == "map"


def test_method_scale_is_shared_across_images_of_a_method_only() -> None:
    maps = np.stack([ramp(), ramp(2.0)])[:, None]  # image 1 twice as strong as image 0
    exps = {"a": exp_of(maps), "b": exp_of(maps * 100, "b")}
    fig = comparison_grid(exps, style="masked", scale="method", percentile=None)
    ax = panels(fig)  # rows of (image, a, b)
    np.testing.assert_allclose(pixels(ax[4]), 2 * pixels(ax[1]), atol=1e-6)  # within a method: shared
    np.testing.assert_allclose(pixels(ax[2]), pixels(ax[1]), atol=1e-6)  # across methods: own scale
    fig = comparison_grid(exps, style="masked", scale="map", percentile=None)
    np.testing.assert_allclose(pixels(panels(fig)[4]), pixels(panels(fig)[1]), atol=1e-6)


def test_signed_maps_are_diverging_centred_at_zero_and_transparent_there() -> None:
    maps = np.zeros((1, 1, H, W), np.float32)
    maps[0, 0, 1, 1] = 2.0  # for
    maps[0, 0, 4, 6] = -2.0  # against
    maps[0, 0, 2, 2] = 0.5
    images = random_images((1, H, W, 3))
    exp = exp_of(maps, "captum.IntegratedGradients", images=images)  # registered as signed
    fig = comparison_grid(exp, percentile=None)
    drawn = pixels(panels(fig)[1])
    np.testing.assert_allclose(drawn[0, 0], images[0, 0, 0] / 255.0, atol=1e-9)  # zero: the image's own colour
    np.testing.assert_allclose(drawn[3, 3], images[0, 3, 3] / 255.0, atol=1e-9)
    red, blue = drawn[1, 1], drawn[4, 6]
    assert red[0] > red[2] and blue[2] > blue[0]  # positive red, negative blue
    expected_red = (1 - 0.8) * images[0, 1, 1] / 255.0 + 0.8 * np.array(RED) / 255.0  # full opacity 0.8 at the clip
    np.testing.assert_allclose(red, np.rint(expected_red * 255) / 255.0, atol=1 / 255)
    weak = drawn[2, 2]  # a quarter of the clip value: a quarter of the opacity
    np.testing.assert_allclose(weak, np.rint(0.8 * images[0, 2, 2] + 0.2 * np.array(RED)) / 255.0, atol=1 / 255)
    bar = next(ax for ax in fig.axes if ax.get_label() == "<colorbar>")
    assert bar.get_ylim() == (-1.0, 1.0) and "red for, blue against" in bar.get_ylabel()
    assert fig.xai_bridge_norm["norm"] == "signed"
    unsigned = comparison_grid(exp_of(np.abs(maps), "gradcam.GradCAM", images=images), percentile=None)
    bar = next(ax for ax in unsigned.axes if ax.get_label() == "<colorbar>")
    assert bar.get_ylim() == (0.0, 1.0) and "|value|" in bar.get_ylabel()
    cam = pixels(panels(unsigned)[1])
    np.testing.assert_allclose(cam[0, 0], images[0, 0, 0] / 255.0, atol=1e-9)
    top = np.rint(0.2 * images[0, 1, 1] + 0.8 * np.array(SEQUENTIAL[-1])) / 255.0  # the sequential scale's top
    np.testing.assert_allclose(cam[1, 1], top, atol=1 / 255)
    chosen = comparison_grid(exp, norm="abs", percentile=None)  # the user's explicit choice wins
    assert chosen.xai_bridge_norm["norm"] == "abs"
    against = np.rint(0.2 * images[0, 4, 6] + 0.8 * np.array(SEQUENTIAL[-1])) / 255.0  # sign dropped: top colour
    np.testing.assert_allclose(pixels(panels(chosen)[1])[4, 6], against, atol=1 / 255)


def test_signedness_comes_from_the_registry_and_the_params() -> None:
    from xai_bridge.viz.colors import rule_for, signed_maps

    positive = exp_of(ramp()[None, None], "captum.IntegratedGradients")
    assert signed_maps(positive)  # registered signed, even where this map happens to be positive
    assert not signed_maps(dataclasses.replace(positive, method="gradcam.GradCAM"))
    sq = dataclasses.replace(positive, params={"noise_tunnel": {"kind": "smoothgrad_sq", "nt_samples": 4}})
    assert not signed_maps(sq) and not signed_maps(dataclasses.replace(positive, params={"abs": True}))
    assert signed_maps(dataclasses.replace(positive, method="captum.Saliency", params={"abs": False}))
    assert signed_maps(exp_of(-ramp()[None, None], "lib.Unknown"))  # unregistered: judged by its values
    assert not signed_maps(exp_of(ramp()[None, None], "lib.Unknown"))
    assert rule_for(sq).label() == "unsigned |value|, clipped at the 99th percentile of |value|, per map"
    assert rule_for(sq, "positive").norm is xb.Norm.POSITIVE


def test_mixed_figures_get_one_colour_bar_per_kind() -> None:
    maps = np.stack([ramp(), -ramp()])[None]
    fig = comparison_grid(
        {
            "captum.IntegratedGradients": exp_of(maps, "captum.IntegratedGradients"),
            "gradcam.GradCAM": exp_of(np.abs(maps), "gradcam.GradCAM"),
        }
    )
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert sorted(b.get_ylim() for b in bars) == [(-1.0, 1.0), (0.0, 1.0)]
    assert any(b.get_ylabel().startswith("IntegratedGradients:") for b in bars)


def test_explanation_plot_and_notebook_views() -> None:
    import matplotlib
    from matplotlib.figure import Figure

    before = matplotlib.get_backend()
    exp = dataclasses.replace(make_explanation(), extras={"probability": np.full((2, 3), 0.25, np.float32)})
    fig = exp.plot()
    assert isinstance(fig, Figure) and fig._repr_png_()[:4] == b"\x89PNG"  # shows in Jupyter without pyplot
    assert [ax.get_title() for ax in panels(fig)[1:4]] == ["class 0\np=0.25", "class 1\np=0.25", "class 2\np=0.25"]
    assert "pyplot" not in sys.modules or not __import__("matplotlib.pyplot").pyplot.get_fignums()
    assert matplotlib.get_backend() == before
    page = exp._repr_html_()
    assert all(f"<b>class {i}</b>" in page for i in range(6)) and "p=0.25" in page
    assert page.count("<img src='data:image/png;base64,") == 2 * (1 + 3) and "captum.IntegratedGradients" in page
    png = exp._repr_png_()
    assert png[:4] == b"\x89PNG"
    assert "masks" in dir(xb) and "explain_caption" in dir(xb) and "plot" in dir(xb)


def test_grid_rejects_explanations_of_other_images() -> None:
    exp = make_explanation()
    other = dataclasses.replace(exp, images=255 - exp.images, method="other")
    with pytest.raises(ValueError, match="other images"):
        comparison_grid([exp, other])
    with pytest.raises(ValueError, match="at least one"):
        comparison_grid({})
    with pytest.raises(ValueError):
        comparison_grid(exp, scale="row")


def test_overlay_styles() -> None:
    image = random_images((32, 32, 3))
    zeros = np.zeros((32, 32))
    np.testing.assert_allclose(overlay(image, zeros, Style.HEAT, alpha=0.0), image / 255.0, atol=1e-6)
    np.testing.assert_allclose(overlay(image, zeros, Style.SIGNED), image / 255.0, atol=1e-6)  # 0: untouched
    assert overlay(image, zeros, Style.MASKED).max() == 0
    np.testing.assert_allclose(overlay(image, np.ones((32, 32)), "masked"), image / 255.0, atol=1e-6)
    blob = np.zeros((32, 32))
    blob[8:16, 8:16] = 1.0
    out = overlay(image, blob, Style.OUTLINE, top_percent=10)
    green = np.all(out == (0.0, 1.0, 0.0), axis=-1)
    ys, xs = np.nonzero(green)
    assert green.any() and ys.min() >= 4 and ys.max() <= 19 and xs.min() >= 4 and xs.max() <= 19
    assert out.shape == (32, 32, 3) and out.min() >= 0.0 and out.max() <= 1.0


def test_caption_plot_has_one_panel_per_token_on_one_scale() -> None:
    maps = np.stack([ramp(), ramp(3.0), -ramp()])[None]  # 3 tokens
    exp = dataclasses.replace(exp_of(maps), target_names=[["a", "cat", "sitting"]])
    fig = caption_plot(exp, columns=2)
    shown = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in shown] == ["image", "a", "cat", "sitting"]
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    fig = caption_plot(exp, columns=6, norm="abs", percentile=None)
    shown = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    token_a, token_cat = pixels(shown[1]), pixels(shown[2])  # one shared scale: "cat" is 3x "a"
    expected_a = overlay(exp.images[0], ramp() / ramp(3.0).max(), "heat", alpha=0.8)
    np.testing.assert_allclose(token_a, expected_a, atol=1e-6)
    assert not np.allclose(token_a, token_cat)


def test_figure_png_bytes() -> None:
    png = figure_png(comparison_grid(make_explanation()))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


# ------------------------------------------------------------------ agreement


def test_grid_titles_and_colour_bar_of_named_methods() -> None:
    exp = make_explanation()  # 2 images, 3 targets
    other = dataclasses.replace(exp, method="other")
    fig = comparison_grid({"lib.MethodA": exp, "lib.MethodB": other})
    image_axes = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(image_axes) == 2 * (1 + 2)
    assert len(fig.axes) == 2 * 3 + 1  # + colour bar
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert titles == ["image", "lib\nMethodA", "lib\nMethodB"]
    assert fig.axes[1].get_xlabel() == "class 0" and fig.axes[4].get_xlabel() == "class 3"
    assert "signed" in fig.axes[-1].get_ylabel()  # make_explanation's maps have both signs
    per_target = comparison_grid({"lib.MethodA": exp}, per_target=True)
    assert len(per_target.axes) == 2 * (1 + 3) + 1
    assert fig.xai_bridge_norm == {"norm": "signed", "percentile": 99.0, "scale": "map"}


def test_one_rule_for_every_map_in_a_row() -> None:
    exp = make_explanation(n=1, t=1)
    louder = dataclasses.replace(exp, attributions=exp.attributions * 10, raw=None, method="louder")
    per_map = comparison_grid({"a": exp, "b": louder}, scale="map")
    a, b = (ax.images[0].get_array() for ax in per_map.axes[1:3])
    assert np.array_equal(a, b)  # same rule, each map scaled by itself: identical pictures
    shared = comparison_grid({"a": exp, "b": louder}, scale="figure", style="masked", percentile=None)
    a, b = (np.asarray(ax.images[0].get_array(), float) for ax in shared.axes[1:3])
    assert a.mean() < b.mean() / 5  # one scale for the figure: the quiet map looks quiet
    with pytest.raises(ValueError, match="other images"):
        comparison_grid({"a": exp, "b": dataclasses.replace(exp, images=exp.images[:, ::-1].copy())})


def test_overlay_styles_by_name() -> None:
    image = np.full((20, 20, 3), 128, np.uint8)
    m = np.zeros((20, 20))
    m[5:10, 5:10] = 1.0
    assert overlay(image, m, "masked")[0, 0].tolist() == [0.0, 0.0, 0.0]
    signed = overlay(image, -m, "signed", alpha=1.0)
    assert signed[7, 7, 2] > signed[7, 7, 0]  # negative: blue
    outline = overlay(image, m, "outline", top_percent=6.25)
    green = (outline[..., 1] == 1.0) & (outline[..., 0] == 0.0)
    assert green.any() and green[:4].sum() == 0  # outline drawn around the square only


def test_caption_plot_titles_are_the_tokens() -> None:
    exp = make_explanation(n=1, t=4)
    fig = caption_plot(exp)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 5  # image + 4 tokens (+ colour bar axis without image)
    assert [ax.get_title() for ax in panels[1:]] == [f"class {i}" for i in range(4)]
    assert Norm.SIGNED.value in fig.axes[-1].get_ylabel()
