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
import sys
from pathlib import Path
from typing import Any

import click

__all__ = ["load_model_spec", "main", "parse_params"]

PREPROCESS = ("imagenet", "inception", "caffe", "unit", "none")


def load_model_spec(spec: str, preprocess: str = "imagenet", batch_size: int = 16) -> Any:
    """Build the model named by ``spec`` (see the module docstring)."""
    import xai_bridge as xb

    if spec in ("efficientnet_lite0", "efficientnet-lite0"):
        from xai_bridge.adapters.models import efficientnet_lite0

        return efficientnet_lite0(batch_size=batch_size)
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise click.BadParameter(
            f"{spec!r}: expected efficientnet_lite0, module:factory or file.py:factory", param_hint="MODEL"
        )
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise click.BadParameter(f"file {target!r} does not exist", param_hint="MODEL")
        mod_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise click.BadParameter(f"cannot import {target!r}: {exc}", param_hint="MODEL") from exc
    if not hasattr(module, attr):
        raise click.BadParameter(f"{target!r} has no attribute {attr!r}", param_hint="MODEL")
    try:
        obj = getattr(module, attr)()
    except Exception as exc:  # the user's factory: say which one failed and why
        raise click.ClickException(f"MODEL: {spec} raised {type(exc).__name__}: {exc}") from exc
    if isinstance(obj, xb.Model) and hasattr(obj, "output_kind"):
        return obj
    pre = None
    if preprocess != "none":
        pre = {
            "imagenet": xb.Preprocess.imagenet,
            "inception": xb.Preprocess.inception,
            "caffe": xb.Preprocess.caffe,
            "unit": lambda: xb.Preprocess(scale="unit"),
        }[preprocess]()
    return xb.as_model(obj, preprocess=pre, batch_size=batch_size)


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
    import xai_bridge as xb

    low = text.lower()
    if low.startswith("top") and low[3:].isdigit():
        return xb.top_k(int(low[3:]))
    return int(text) if text.lstrip("-").isdigit() else text


@click.group()
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


@main.command()
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
@click.option("--size", nargs=2, type=int, default=None, help="resize images to HEIGHT WIDTH first")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="output folder (or store with --dataset)")
@click.option(
    "--report", "report_path", type=click.Path(path_type=Path), default=None, help="also write this HTML report"
)
@click.option("--png", type=click.Path(path_type=Path), default=None, help="also write a comparison grid PNG")
@click.option("--title", default="xai-bridge report", show_default=True, help="title of the HTML report")
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
    seed: int,
    out: Path,
    report_path: Path | None,
    png: Path | None,
    title: str,
    dataset: bool,
    engine: str,
    progress: bool | None,
) -> None:
    """Explain IMAGES (files or folders) with MODEL and write one .npz per method to --out."""
    import xai_bridge as xb
    from xai_bridge.images import iter_image_files
    from xai_bridge.progress import session, write

    show = "auto" if progress is None else progress
    per_method = parse_params(params, methods_)
    registry = xb.default_registry()
    for name in methods_:  # fail before any work (a --dataset run would otherwise fail every image)
        try:
            registry.spec(name)
        except xb.UnknownMethodError as exc:
            raise click.BadParameter(str(exc), param_hint="--method") from exc
    click.echo(f"loading model {model_spec} ...")
    model = load_model_spec(model_spec, preprocess, batch_size)
    target = _targets(targets)
    plan = [(m, per_method[m]) for m in methods_]
    if dataset:
        from xai_bridge.datasets import explain_dataset

        sources = [p for p in iter_image_files(images)]
        summary = explain_dataset(
            model,
            sources,
            plan,
            out,
            targets=target,
            seed=seed,
            batch_size=batch_size,
            size=tuple(size) if size else None,
            engine=engine,
            progress=show,
        )
        click.echo(str(summary))
        if summary.failed and not summary.done and not summary.skipped:
            raise click.ClickException("every image failed (reasons above)")
        return
    files = list(iter_image_files(images))
    batch = xb.load_images(files, size=tuple(size) if size else None)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    with session(show, "explain"):  # one bar for the run; each method relabels it, lines are written above it
        for i, (name, method_params) in enumerate(plan, start=1):
            write(f"[{i}/{len(plan)}] {name} on {len(batch)} image(s) ...")
            try:
                results.update(xb.explain_many(model, batch, [(name, method_params)], target, seed=seed))
            except (xb.XaiBridgeError, TypeError, ValueError) as exc:
                raise click.ClickException(str(exc)) from exc
            exp = results[name]
            path = exp.save(out / f"{name}.npz")
            write(f"{name}: {exp.seconds:.2f}s, {exp.n_model_evals} evaluations -> {path}")
    if report_path is not None:
        from xai_bridge.viz.report import write_report

        click.echo("writing the report ...")
        path = write_report(report_path, results, image_names=[f.name for f in files], title=title)
        click.echo(f"report -> {path}")
    if png is not None:
        from xai_bridge.viz.plot import comparison_grid

        comparison_grid(results).savefig(png, dpi=80, bbox_inches="tight")
        click.echo(f"grid -> {png}")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("report.html"), show_default=True)
@click.option("--png", type=click.Path(path_type=Path), default=None, help="also write a comparison grid PNG")
@click.option("--title", default="xai-bridge report", show_default=True)
def report(files: tuple[Path, ...], out: Path, png: Path | None, title: str) -> None:
    """Build an HTML report (and a PNG grid) from saved Explanation .npz FILES."""
    import xai_bridge as xb
    from xai_bridge.viz.report import write_report

    try:
        loaded = [(f, xb.Explanation.load(f)) for f in files]
    except xb.FormatError as exc:
        raise click.ClickException(str(exc)) from exc
    methods_seen = [e.method for _, e in loaded]
    # the same method from two files (other params, other runs) keeps both, named by file
    exps = {(e.method if methods_seen.count(e.method) == 1 else f.stem): e for f, e in loaded}
    if len(exps) != len(loaded):
        raise click.ClickException("FILES: two files have the same name and method; rename one")
    try:
        click.echo(f"report -> {write_report(out, exps, title=title)}")
        if png is not None:
            from xai_bridge.viz.plot import comparison_grid

            comparison_grid(exps).savefig(png, dpi=80, bbox_inches="tight")
            click.echo(f"grid -> {png}")
    except ValueError as exc:  # explanations of other images, ...
        raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
