"""What ``xai-bridge explain`` and ``xai-bridge report`` run and write, once their options are checked.

Kept apart from :mod:`xai_bridge.cli`, which holds the command definitions
(options, help, the one-line error policy): here are the runs (in memory, or
streamed into a dataset store) and the files they write (``.npz`` per
method, the HTML report, the grid PNG).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

__all__ = ["GRID_DPI", "explain_in_memory", "explain_into_store", "report_inputs", "save_grid", "write_views"]

#: The grid's resolution: its 7-point colour-bar text is 12 pixels high (at 80 dpi it was 8).
GRID_DPI = 120


def explain_into_store(
    model: Any,
    files: list[Path],
    plan: list[tuple[str, dict[str, Any]]],
    out: Path,
    target: Any,
    budget: int | None,
    seed: int,
    chunk_size: int,
    size: tuple[int, int] | None,
    engine: str,
    show: Any,
) -> None:
    """``--dataset``: stream the images into a resumable store and print its summary."""
    from xai_bridge.datasets import explain_dataset

    summary = explain_dataset(
        model,
        files,
        plan,
        target,
        out=out,
        budget=budget,
        seed=seed,
        chunk_size=chunk_size,
        size=size,
        engine=engine,
        progress=show,
    )
    click.echo(str(summary))
    if summary.failed and not summary.done and not summary.skipped:
        raise click.ClickException("every image failed (reasons above)")


def explain_in_memory(
    model: Any,
    files: list[Path],
    plan: list[tuple[str, dict[str, Any]]],
    out: Path,
    target: Any,
    budget: int | None,
    seed: int,
    size: tuple[int, int] | None,
    show: Any,
) -> dict[str, Any]:
    """Explain all images in one batch, method by method, saving one ``.npz`` per method to ``out``."""
    import xai_bridge as xb
    from xai_bridge.images import _load_images
    from xai_bridge.progress import session, write

    fix = "pass --size HEIGHT WIDTH to resize them, or --dataset to explain each at its own size"
    batch = _load_images(files, size=size, fix=fix)
    results: dict[str, Any] = {}
    with session(show, "explain"):  # one bar for the run; each method relabels it, lines are written above it
        for i, (name, method_params) in enumerate(plan, start=1):
            write(f"[{i}/{len(plan)}] {name} on {len(batch)} image(s) ...")
            results.update(xb.explain_many(model, batch, [(name, method_params)], target, budget=budget, seed=seed))
            exp = results[name]
            out.mkdir(parents=True, exist_ok=True)  # only once there is a result: a refused run leaves nothing
            path = exp.save(out / f"{name}.npz")
            write(f"{name}: {exp.seconds:.2f}s, {exp.n_model_evals} evaluations -> {path}")
    return results


def write_views(
    results: dict[str, Any],
    files: list[Path],
    report_path: Path | None,
    png: Path | None,
    title: str,
    sanity_model: Any = None,
) -> None:
    """Write the HTML report (with the sanity check when given the model) and the comparison grid PNG, where asked."""
    if report_path is not None:
        from xai_bridge.viz.report import write_report

        report_path.parent.mkdir(parents=True, exist_ok=True)
        click.echo("writing the report ...")
        names = [f.name for f in files]
        sanity = {"sanity": True, "model": sanity_model} if sanity_model is not None else {}
        path = write_report(report_path, results, image_names=names, title=title, **sanity)
        click.echo(f"report -> {path}")
    if png is not None:
        click.echo(f"grid -> {save_grid(results, png)}")


def save_grid(results: dict[str, Any], png: Path) -> Path:
    """Write the comparison grid, one column per method and target when several targets were asked for.

    The folder is created as ``--out`` and ``--report`` create theirs.
    """
    from xai_bridge.viz.plot import comparison_grid

    png.parent.mkdir(parents=True, exist_ok=True)
    per_target = max(exp.n_targets for exp in results.values()) > 1
    fig = comparison_grid(results, per_target=per_target)
    fig.savefig(png, dpi=GRID_DPI, bbox_inches="tight")
    return png


def report_inputs(files: tuple[Path, ...]) -> dict[str, Any]:
    """``report``'s FILES loaded and named: by method, or by file where two files hold one method.

    Files that explain other images are refused before anything is written
    (see :func:`_same_images`); so are two files of one name and method.
    """
    import xai_bridge as xb

    loaded = [(f, xb.Explanation.load(f)) for f in files]
    _same_images(loaded)
    methods_seen = [e.method for _, e in loaded]
    # the same method from two files (other params, other runs) keeps both, named by file
    exps = {(e.method if methods_seen.count(e.method) == 1 else f.stem): e for f, e in loaded}
    if len(exps) != len(loaded):
        raise click.ClickException("FILES: two files have the same name and method; rename one")
    return exps


def _same_images(loaded: list[tuple[Path, Any]]) -> None:
    """Refuse files that explain other images: a report (and its grid) compares methods on the same images.

    A report of several runs' files would put each run's images in sections of
    their own with nothing to compare them with (issue 28): the fix is one
    report per run, or one run over all the images.
    """
    import numpy as np

    first_file, first = loaded[0]
    for path, exp in loaded[1:]:
        if exp.images.shape != first.images.shape or not np.array_equal(exp.images, first.images):
            raise click.BadParameter(
                f"{path.name} explains other images than {first_file.name} ({exp.images.shape[0]} image(s) of "
                f"{exp.images.shape[1]}x{exp.images.shape[2]} vs {first.images.shape[0]} of "
                f"{first.images.shape[1]}x{first.images.shape[2]}, or other pixels); a report compares methods on "
                "the same images: write one report per run's files, or explain all the images in one run "
                "(one `xai-bridge explain` with every image, or xb.explain_many) and report that",
                param_hint="FILES",
            )
