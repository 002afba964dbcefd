r"""The ``xai-bridge`` command line: ``methods``, ``explain``, ``report``.

Examples::

    xai-bridge methods --installed
    xai-bridge explain efficientnet_lite0 cat.jpg dog.png -m gradcam.GradCAM -m lime \\
        -p lime:num_samples=300 --targets top3 --size 224 224 --out results/ --report results/report.html
    xai-bridge explain efficientnet_lite0 val/ -m gradcam.GradCAM --dataset --out store/ --engine ray
    xai-bridge report results/*.npz --out report.html --png grid.png

Model specs: ``efficientnet_lite0`` (bundled), ``package.module:factory`` or
``path/to/file.py:factory``; the factory returns an ``nn.Module`` (give
``--preprocess``), an xai-bridge Model, or a function of uint8 NHWC images.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from ._cli_checks import check_plan, check_targets, first_image_size
from ._cli_help import EXPLAIN_HELP, REPORT_HELP, SIZE
from ._model_spec import load_model_spec, one_line

__all__ = ["load_model_spec", "main", "parse_params"]

PREPROCESS = ("imagenet", "inception", "caffe", "unit", "none")

#: Set to 1 to see the Python traceback of an unexpected error instead of its one-line summary.
TRACEBACK_ENV = "XAI_BRIDGE_TRACEBACK"


class _Group(click.Group):
    """The command group: every error becomes one ``Error: ...`` line, never a traceback.

    An :class:`~xai_bridge.XaiBridgeError` is a user error and says what to
    fix; anything else is unexpected and keeps its type and a hint on how to
    see the traceback (``XAI_BRIDGE_TRACEBACK=1``).
    """

    def invoke(self, ctx: click.Context) -> Any:
        from xai_bridge.errors import XaiBridgeError

        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:  # `xai-bridge methods | head -1`: the reader left; stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # Python's final flush goes nowhere, not to a closed pipe
            raise click.exceptions.Exit(0) from None
        except XaiBridgeError as exc:
            raise click.ClickException(one_line(exc)) from exc
        except OSError as exc:  # a file or folder the command was pointed at
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or one_line(exc)}") from exc
        except Exception as exc:
            if os.environ.get(TRACEBACK_ENV):
                raise
            raise click.ClickException(
                f"{type(exc).__name__}: {one_line(exc)} (unexpected; set {TRACEBACK_ENV}=1 to see the traceback)"
            ) from exc


def _require(module: str, extra: str, option: str) -> None:
    """Refuse an option whose optional library is missing before any work is done."""
    if importlib.util.find_spec(module) is None:
        raise click.UsageError(f"{option} needs {module}, which is not installed: pip install 'xai-bridge[{extra}]'")


def _output(path: Path | None, option: str, folder: bool = False) -> None:
    """Refuse an output path that cannot be written (a file in the way), before any work is done."""
    if path is None:
        return
    if folder and path.exists() and not path.is_dir():
        raise click.BadParameter(f"{str(path)!r} is a file; expected a folder", param_hint=option)
    if not folder and path.is_dir():
        raise click.BadParameter(f"{str(path)!r} is a folder; expected a file name", param_hint=option)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise click.BadParameter(f"{str(parent)!r} is a file, not a folder", param_hint=option)
            break


def parse_params(items: tuple[str, ...], methods: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``METHOD:KEY=VALUE`` items -> ``{method: {key: value}}`` (values parsed as JSON when they can be)."""
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for item in items:
        head, eq, raw = item.partition("=")
        method, colon, key = head.rpartition(":")
        if not eq or not colon or not key:
            raise click.BadParameter(f"{item!r}: expected METHOD:KEY=VALUE", param_hint="--param")
        if method not in out:
            raise click.BadParameter(
                f"{item!r}: {method!r} is not one of the methods {list(methods)}", param_hint="--param"
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[method][key] = value
    return out


def _targets(text: str) -> Any:
    """``--targets``: ``topK`` (K >= 1), a class index or a class name."""
    import xai_bridge as xb

    low = text.strip().lower()
    if low.startswith("top") and low[3:].lstrip("-").isdigit():
        k = int(low[3:].lstrip("-"))
        if k < 1:
            raise click.BadParameter(f"{text!r}: expected top1, top2, ...; K must be >= 1", param_hint="--targets")
        return xb.top_k(k)
    if low.lstrip("-").isdigit():
        if int(low) < 0:
            raise click.BadParameter(f"{text!r}: class indices are >= 0", param_hint="--targets")
        return int(low)
    return text


@click.group(cls=_Group)
@click.version_option(package_name="xai-bridge")
def main() -> None:
    """Explain image models with shap, lime, captum, grad-cam and torchcam through one interface."""


@main.command()
@click.option("--installed", is_flag=True, help="only methods whose library is installed")
@click.option("--family", type=click.Choice(["cam", "gradient", "perturbation", "other"]), default=None)
def methods(installed: bool, family: str | None) -> None:
    """List the registered methods, whether their library is installed, and how to install it."""
    import xai_bridge as xb

    registry = xb.default_registry()
    for name in registry.available(installed_only=installed, family=family):
        spec = registry.specs[name]
        status = "yes" if spec.is_installed() else f"no  ({spec.install_hint})"
        click.echo(f"{name:40s} {spec.family:13s} installed: {status}")


@main.command(help=EXPLAIN_HELP)
@click.argument("model_spec", metavar="MODEL")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-m", "--method", "methods_", multiple=True, required=True, help="method name (repeatable)")
@click.option("-p", "--param", "params", multiple=True, help="METHOD:KEY=VALUE (repeatable; VALUE is JSON or text)")
@click.option("--targets", default="top1", show_default=True, help="top1, topK, a class index or a class name")
@click.option(
    "--preprocess",
    type=click.Choice(PREPROCESS),
    default="imagenet",
    show_default=True,
    help="preprocessing of a torch module / array model given by a factory",
)
@click.option("--size", nargs=2, type=SIZE, default=None, help="resize images to HEIGHT WIDTH first (two integers)")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="images per model call")
@click.option(
    "--budget",
    type=click.IntRange(min=1),
    default=None,
    help="model evaluations per image, mapped onto each method's own budget parameter",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=None,
    help="with --dataset: images per chunk written (default: --batch-size)",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="output folder (or store with --dataset)")
@click.option(
    "--report", "report_path", type=click.Path(path_type=Path), default=None, help="also write this HTML report"
)
@click.option("--png", type=click.Path(path_type=Path), default=None, help="also write a comparison grid PNG")
@click.option("--title", default="xai-bridge report", show_default=True, help="title of the HTML report")
@click.option(
    "--sanity",
    is_flag=True,
    help="with --report: run the cascading randomisation check per method and mark maps it leaves unchanged",
)
@click.option("--dataset", is_flag=True, help="stream a folder into a resumable store (one file per image)")
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="with --dataset: run locally or on Ray",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="progress bars per batch of model evaluations (default: when stderr is a terminal)",
)
def explain(
    model_spec: str,
    images: tuple[Path, ...],
    methods_: tuple[str, ...],
    params: tuple[str, ...],
    targets: str,
    preprocess: str,
    size: tuple[int, int] | None,
    batch_size: int,
    budget: int | None,
    chunk_size: int | None,
    seed: int,
    out: Path,
    report_path: Path | None,
    png: Path | None,
    title: str,
    sanity: bool,
    dataset: bool,
    engine: str,
    progress: bool | None,
) -> None:
    """Explain IMAGES with MODEL (the command's help is EXPLAIN_HELP: what MODEL, IMAGES and -p accept)."""
    from xai_bridge.images import iter_image_files

    show = "auto" if progress is None else progress

    methods_ = _unique_methods(methods_)
    per_method = parse_params(params, methods_)
    _output(out, "--out", folder=True)
    _output(report_path, "--report")
    _output(png, "--png")
    if report_path is not None or png is not None:
        _require("matplotlib", "viz", "--report" if report_path is not None else "--png")
    target = _targets(targets)
    files = list(iter_image_files(images))
    if not files:
        raise click.BadParameter(
            f"no image files in {', '.join(repr(str(p)) for p in images)}; pass image files or folders holding them",
            param_hint="IMAGES",
        )
    plan = [(m, per_method[m]) for m in methods_]
    resize = (size[0], size[1]) if size else None
    check_plan(plan, budget, first_image_size(files, resize), seed)  # every -p, before the model loads
    click.echo(f"loading model {model_spec} ...")
    model = load_model_spec(model_spec, preprocess, batch_size)
    check_targets(target, model)  # a class name or index, before the model runs
    if dataset:
        _explain_dataset(model, files, plan, out, target, budget, seed, chunk_size or batch_size, resize, engine, show)
        return
    results = _explain_in_memory(model, files, plan, out, target, budget, seed, resize, show)
    _write_views(results, files, report_path, png, title, model if sanity else None)


def _explain_dataset(
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


def _explain_in_memory(
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


def _write_views(
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
        click.echo(f"grid -> {_save_grid(results, png)}")


#: The grid's resolution: its 7-point colour-bar text is 12 pixels high (at 80 dpi it was 8).
GRID_DPI = 120


def _save_grid(results: dict[str, Any], png: Path) -> Path:
    """Write the comparison grid, one column per method and target when several targets were asked for.

    The folder is created as ``--out`` and ``--report`` create theirs.
    """
    from xai_bridge.viz.plot import comparison_grid

    png.parent.mkdir(parents=True, exist_ok=True)
    per_target = max(exp.n_targets for exp in results.values()) > 1
    fig = comparison_grid(results, per_target=per_target)
    fig.savefig(png, dpi=GRID_DPI, bbox_inches="tight")
    return png


def _unique_methods(methods: tuple[str, ...]) -> tuple[str, ...]:
    """The ``-m`` names, each once; two spellings of one method are refused (their outputs would collide)."""
    import xai_bridge as xb

    registry = xb.default_registry()
    seen: dict[str, str] = {}
    for name in dict.fromkeys(methods):  # -m X -m X runs X once
        try:
            canonical = registry.spec(name).name
        except xb.UnknownMethodError as exc:  # fail before any work (a --dataset run would fail every image)
            raise click.BadParameter(str(exc), param_hint="--method") from exc
        if canonical in seen:
            raise click.BadParameter(
                f"{seen[canonical]!r} and {name!r} are the same method {canonical!r}; give it once",
                param_hint="--method",
            )
        seen[canonical] = name
    return tuple(seen.values())


@main.command(help=REPORT_HELP)
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("report.html"), show_default=True)
@click.option("--png", type=click.Path(path_type=Path), default=None, help="also write a comparison grid PNG")
@click.option("--title", default="xai-bridge report", show_default=True)
def report(files: tuple[Path, ...], out: Path, png: Path | None, title: str) -> None:
    """Build an HTML report (and a PNG grid) from saved .npz FILES (the command's help is REPORT_HELP)."""
    import xai_bridge as xb

    _output(out, "--out")
    _output(png, "--png")
    _require("matplotlib", "viz", "report")
    from xai_bridge.viz.report import write_report

    loaded = [(f, xb.Explanation.load(f)) for f in files]
    if png is not None:  # the HTML report gives other images sections of their own; the grid cannot
        _same_images(loaded)
    methods_seen = [e.method for _, e in loaded]
    # the same method from two files (other params, other runs) keeps both, named by file
    exps = {(e.method if methods_seen.count(e.method) == 1 else f.stem): e for f, e in loaded}
    if len(exps) != len(loaded):
        raise click.ClickException("FILES: two files have the same name and method; rename one")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        click.echo(f"report -> {write_report(out, exps, title=title)}")
        if png is not None:
            click.echo(f"grid -> {_save_grid(exps, png)}")
    except ValueError as exc:  # explanations of other images, ...
        raise click.ClickException(one_line(exc)) from exc


def _same_images(loaded: list[tuple[Path, Any]]) -> None:
    """Refuse files that explain other images for ``--png``: the grid compares methods on the same images."""
    import numpy as np

    first_file, first = loaded[0]
    for path, exp in loaded[1:]:
        if exp.images.shape != first.images.shape or not np.array_equal(exp.images, first.images):
            raise click.BadParameter(
                f"{path.name} explains other images than {first_file.name} ({exp.images.shape[0]} image(s) of "
                f"{exp.images.shape[1]}x{exp.images.shape[2]} vs {first.images.shape[0]} of "
                f"{first.images.shape[1]}x{first.images.shape[2]}, or other pixels); --png compares methods on the same images: pass the files of one run, "
                "or leave out --png (the HTML report shows each image in its own section)",
                param_hint="FILES",
            )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
