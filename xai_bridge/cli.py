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

import os
import sys
from pathlib import Path
from typing import Any

import click

from ._cli_args import check_output, parse_params, parse_targets, require, unique_methods
from ._cli_checks import check_plan, check_targets, first_image_size
from ._cli_help import EXPLAIN_HELP, REPORT_HELP, SIZE
from ._cli_run import explain_in_memory, explain_into_store, report_inputs, save_grid, write_views
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

    methods_ = unique_methods(methods_)
    per_method = parse_params(params, methods_)
    check_output(out, "--out", folder=True)
    check_output(report_path, "--report")
    check_output(png, "--png")
    if report_path is not None or png is not None:
        require("matplotlib", "viz", "--report" if report_path is not None else "--png")
    target = parse_targets(targets)
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
        explain_into_store(
            model, files, plan, out, target, budget, seed, chunk_size or batch_size, resize, engine, show
        )
        return
    results = explain_in_memory(model, files, plan, out, target, budget, seed, resize, show)
    write_views(results, files, report_path, png, title, model if sanity else None)


@main.command(help=REPORT_HELP)
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("report.html"), show_default=True)
@click.option("--png", type=click.Path(path_type=Path), default=None, help="also write a comparison grid PNG")
@click.option("--title", default="xai-bridge report", show_default=True)
def report(files: tuple[Path, ...], out: Path, png: Path | None, title: str) -> None:
    """Build an HTML report (and a PNG grid) from saved .npz FILES of the same images (help: REPORT_HELP)."""
    check_output(out, "--out")
    check_output(png, "--png")
    require("matplotlib", "viz", "report")
    from xai_bridge.viz.report import write_report

    exps = report_inputs(files)  # files of other images are refused here, before anything is written
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        click.echo(f"report -> {write_report(out, exps, title=title)}")
        if png is not None:
            click.echo(f"grid -> {save_grid(exps, png)}")
    except ValueError as exc:  # a report the viz refuses (shapes, names): one line
        raise click.ClickException(one_line(exc)) from exc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
