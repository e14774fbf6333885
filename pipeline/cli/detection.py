"""The model commands: `gruwatch train`, `score`, `evaluate` and `evaluate nab`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from pipeline.cli.common import console, data_files_option, model_options
from pipeline.errors import GruwatchError
from pipeline.settings import KINDS

if TYPE_CHECKING:  # the CLI imports models lazily: a command loads only what it runs
    from models.detector import Detector, Scored
    from pipeline.modeling import Dataset


@click.command()
@click.option("--kind", type=click.Choice(list(KINDS)), required=True, help="Stream kind to train for.")
@data_files_option("JSONL files or folders (from `record` or `produce --output`); repeatable.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Model directory to write.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Stop after this many epochs without a better validation loss.",
)
@click.option(
    "--lr-decay",
    type=click.FloatRange(0, 1, min_open=True),
    default=1.0,
    show_default=True,
    help="Multiply the learning rate by this after each epoch without a better validation loss.",
)
@click.option("--hidden", type=click.IntRange(min=4), default=64, show_default=True)
@click.option(
    "--far",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=1e-4,
    show_default=True,
    help="Target false-alarm rate per event (sets the threshold).",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.2,
    show_default=True,
    help="Share of streams held out for validation and calibration.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--name", default=None, help="Model name (default: gru-<kind>).")
@click.option("--version", "model_version", default="1", show_default=True)
def train(
    kind: str,
    data_paths: tuple[Path, ...],
    out_dir: Path,
    epochs: int,
    patience: int,
    lr_decay: float,
    hidden: int,
    far: float,
    val_fraction: float,
    seed: int,
    name: str | None,
    model_version: str,
) -> None:
    """Train a GRU detector on recorded events and write a model directory."""
    from models.artifacts import save_detector
    from models.train import TrainConfig, train_detector
    from pipeline.modeling import load_dataset, spec_for
    from pipeline.progress import event_progress

    data = load_dataset(
        list(data_paths),
        on_bad=lambda b: console.print(f"bad line {b}", style="yellow", markup=False),
    )
    spec = spec_for(kind, data)
    streams = {
        key: [(data.events[i].ts, data.events[i].values, data.events[i].label) for i in idx]
        for key, idx in data.streams().items()
    }
    config = TrainConfig(
        hidden=hidden,
        epochs=epochs,
        patience=patience,
        lr_decay=lr_decay,
        far=far,
        val_fraction=val_fraction,
        seed=seed,
    )
    with event_progress() as bar:
        task = bar.add_task("training", total=epochs)

        def on_epoch(epoch: int, train_nll: float, val_nll: float) -> None:
            bar.update(
                task,
                completed=epoch,
                description=f"epoch {epoch}: train {train_nll:.3f} val {val_nll:.3f}",
            )
            if not bar.console.is_terminal:
                console.print(f"epoch {epoch}: train nll {train_nll:.4f}  val nll {val_nll:.4f}")

        try:
            detector, report = train_detector(spec, streams, config, name or f"gru-{kind}", model_version, on_epoch)
        except ValueError as exc:
            raise GruwatchError(f"cannot train: {exc}") from None
    save_detector(
        detector,
        out_dir,
        {
            "training": {
                "digest": data.digest,
                "files": data.files,
                "bad_lines": len(data.bad),
                "config": config.__dict__,
                **report,
            },
        },
    )
    console.print(
        f"{detector.ident}: {report['epochs']} epochs, best val nll {report['best_val_nll']}, "
        f"threshold {detector.calibration.threshold:.3f} → {out_dir}"
    )


@click.command()
@model_options
@data_files_option("JSONL events (files or folders); repeatable.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    show_default=True,
)
def score(model_dir: Path | None, kind: str | None, data_paths: tuple[Path, ...], output: str) -> None:
    """Backtest: score every event offline; one JSON line per input event, in input order."""
    from pipeline.modeling import load_dataset, load_model, scored_row

    detector = load_model(model_dir, kind)
    data = load_dataset(
        list(data_paths),
        on_bad=lambda b: console.print(f"bad line {b}", style="yellow", markup=False),
    )
    results = _scored_with_progress(detector, data)
    with click.open_file(output, "wb") as out:
        for event, result in zip(data.events, results, strict=True):
            out.write(orjson.dumps(scored_row(event, result)) + b"\n")
    if output != "-":
        console.print(
            f"{len(results)} events scored with {detector.ident}, "
            f"{sum(r.anomalous for r in results)} anomalous → {output}"
        )


@click.group(invoke_without_command=True)
@model_options
@data_files_option("Labelled JSONL events (files or folders); repeatable.", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a PNG of one stream's scores, labels and alerts.",
)
@click.option(
    "--stream",
    "stream_key",
    default=None,
    help="The stream to plot (default: the one with most labels).",
)
@click.pass_context
def evaluate(
    ctx: click.Context,
    model_dir: Path | None,
    kind: str | None,
    data_paths: tuple[Path, ...],
    as_json: bool,
    plot_path: Path | None,
    stream_key: str | None,
) -> None:
    """Detection quality on labelled events: precision, recall, F1, PR-AUC, incidents, delay.

    `gruwatch evaluate nab --data DIR` runs the NAB benchmark instead.
    """
    from models.evaluate import ScoredEvent
    from models.evaluate import evaluate as evaluate_events
    from pipeline.modeling import anomaly_type, load_dataset, load_model

    if ctx.invoked_subcommand is not None:
        return
    if not data_paths:
        raise click.UsageError("Missing option '--data'.", ctx)
    detector = load_model(model_dir, kind)
    data = load_dataset(list(data_paths))
    if all(e.label is None for e in data.events):
        raise GruwatchError("the data has no labels to evaluate against")
    results = _scored_with_progress(detector, data)
    metrics = evaluate_events(
        [
            ScoredEvent(
                e.key, e.ts, e.label or 0, r.score, r.anomalous, r.alert, anomaly_type(e), r.rule, r.probability
            )
            for e, r in zip(data.events, results, strict=True)
        ]
    )
    metrics["model"] = detector.ident
    if plot_path is not None:
        from pipeline.plots import plot_stream

        streams = data.streams()
        key = stream_key or max(streams, key=lambda k: sum(data.events[i].label or 0 for i in streams[k]))
        if key not in streams:
            raise GruwatchError(f"no stream {key!r} in the data")
        idx = streams[key]
        plot_stream(
            [data.events[i] for i in idx],
            [results[i] for i in idx],
            detector.calibration.threshold,
            f"{detector.ident} on {key}",
            plot_path,
        )
        metrics["plot"] = str(plot_path)
    if as_json:
        click.echo(orjson.dumps(metrics).decode())
    else:
        table = Table(title=f"{detector.ident} on {', '.join(map(str, data_paths))}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key_, value in metrics.items():
            table.add_row(key_, _cell(key_, value))
        Console().print(table)


@evaluate.command("nab")
@click.option(
    "--data",
    "nab_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="A NAB checkout (data/, labels/, config/).",
)
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="A generic model directory (default: the shipped generic model).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write a page (index.html) with the published scores beside ours and a timeline per file.",
)
def evaluate_nab_command(nab_dir: Path, model_dir: Path | None, as_json: bool, report_dir: Path | None) -> None:
    """Run the generic detector over every NAB file and score it with NAB's three profiles."""
    from pipeline.modeling import load_model
    from pipeline.nab_eval import run_nab
    from pipeline.progress import event_progress

    detector = load_model(model_dir, "generic")
    with event_progress() as bar:
        task = bar.add_task("NAB records", total=None)
        run = run_nab(detector, nab_dir, lambda done, total: bar.update(task, completed=done, total=total))
    result = run.result
    if report_dir is not None:
        from pipeline.nab_report import write_nab_report

        with event_progress() as bar:
            task = bar.add_task("report", total=len(run.files))
            page = write_nab_report(run, nab_dir, report_dir, lambda name: bar.update(task, advance=1))
        result["report"] = str(page)
    if as_json:
        click.echo(orjson.dumps(result).decode())
        return
    out = Console()  # results on stdout (the module's console is stderr, for messages)
    title = f"NAB with {result['model']} ({result['files']} files, {result['records']:,} records)"
    out.print(_nab_table(title, result["details"]))
    alerts = result["alerts"]
    out.print(_nab_table(f"Its {alerts['count']:,} alerts, as a worker would page them", alerts["details"]))
    baseline = result["baseline"]
    title = f"Baseline, same run: a {baseline['detector']} instead of the model, without its spells"
    out.print(_nab_table(title, baseline["details"]))
    if report_dir is not None:
        out.print(f"report: {result['report']}")


def _scored_with_progress(detector: Detector, data: Dataset) -> list[Scored]:
    """Every event of ``data`` scored (pipeline.modeling.score_dataset), with a bar of events."""
    from pipeline.modeling import score_dataset
    from pipeline.progress import event_progress

    with event_progress() as bar:
        task = bar.add_task("scoring", total=len(data.events))
        return score_dataset(detector, data, lambda done, total: bar.update(task, completed=done))


def _cell(metric: str, value: Any) -> str:
    """A metric as the evaluate table shows it: the breakdowns as `name caught/total` lists."""
    if metric in ("by_type", "by_age"):
        return ", ".join(f"{kind} {v['caught']}/{v['incidents']}" for kind, v in value.items()) or "-"
    if metric == "alerts_by_rule":
        return ", ".join(f"{rule} {v['true']}/{v['alerts']} true" for rule, v in value.items()) or "-"
    return str(value)


def _nab_table(title: str, details: dict[str, dict[str, Any]]) -> Table:
    table = Table(title=title)
    for column in ("profile", "score", "raw", "threshold", "null", "perfect", "windows", "FP"):
        table.add_column(column, justify="right")
    for profile, d in details.items():
        table.add_row(
            profile,
            f"{d['score']:.2f}",
            f"{d['raw']:.2f}",
            f"{d['threshold']:.6f}",
            f"{d['null']:.0f}",
            f"{d['perfect']:.0f}",
            f"{d['windows_detected']}/{d['windows_detected'] + d['windows_missed']}",
            f"{d['false_positives']}",
        )
    return table
