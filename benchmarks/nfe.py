"""Sample quality against network evaluations (NFE) for every sampler, in every design space.

(a) The exact Gaussian oracle (no training): 8×8 periodic Gaussian random fields (spectrum (9 + |k|²)^(−2)) in three
    designs — pixel (white prior, cosine schedule), Fourier (the trace-class power-law prior τ = 1, s = 2 with the
    linear-β VP schedule: the multilevel design of the 64×64 spectrum check) and PCA-soft (PCA basis, white prior, GUD
    soft conditioning ordered by the data's −log variance, softness 1) — scored by the exact 2-Wasserstein distance
    between the Gaussian of the samples' mean and covariance and the data's, W₂ = FD^½ (its floor, the W₂ of as many
    exact samples, is recorded beside it).
(b) Trained CPU models, trained here briefly (reused from --runs when present): the quickstart digits (8×8, scored by
    the Fréchet distance of raw 8-bit pixels to the training digits: there is no packaged digits classifier), 14×14
    MNIST with Gaussian diffusion, a multivariate CLD model on 14×14 MNIST and a Blackout model of binarized MNIST,
    the last three scored by domain FID on the packaged MNIST classifier's features through `diffspace.evaluate`.
    Every FD/FID carries a bootstrap standard error over the samples (reference statistics fixed).

Each sampler runs at the step count whose NFE (network evaluations per sample, the final denoising step included)
is nearest each target of --nfe; the NFE actually spent is what the table shows. The pair the goal compares
(dpmpp_2m at 20 NFE, euler_maruyama at 250) runs first on every Gaussian model; the other rows follow by increasing
NFE, and rows that the time budget (--budget seconds, shared by the trained models in turn) does not reach are
listed as cut in the record. Writes benchmarks/results/nfe-cpu.json (benchmarks/records.py), prints a table, and
draws docs/figures/nfe-cpu.png (matplotlib).

    python benchmarks/nfe.py                  # CPU-sized: about 25 minutes on 1 thread, training included
    python benchmarks/nfe.py --skip-trained   # the oracle part only (a few minutes)
    python benchmarks/nfe.py --smoke --out /tmp/nfe.json   # toy sizes, well under a minute (tests/test_nfe.py)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from diffspace.build import generate
from diffspace.config import load_preset
from diffspace.data import DataConfig, DataError, load_dataset
from diffspace.data.fields import power_law_variance
from diffspace.families.gaussian import GaussianConfig
from diffspace.families.gaussian.oracle import GaussianOracle, covariance_in_basis
from diffspace.images import to_uint8
from diffspace.metrics.classifier import CLASSIFIER_DATASETS
from diffspace.metrics.fid import FeatureStats, fid_bootstrap_se, fid_from_stats, frechet_distance
from diffspace.metrics.reference import ClassifierFeatures, reference_stats
from diffspace.model import load
from diffspace.process import build_process, family, get_sampler
from diffspace.spaces import FourierBasis
from diffspace.training import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import device_name, write_record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The packaged MNIST classifier, which scores binarized MNIST too.
CLASSIFIER_WEIGHTS = ROOT / "src/diffspace/metrics/weights/classifier-mnist.safetensors"
NFE_TARGETS = (5, 10, 20, 50, 100, 250)
#: Network evaluations per step (pc with one corrector step); every continuous sampler adds 1 for its denoising step.
PER_STEP = {"heun": 2, "pc": 2, "edm_heun": 2}
#: The goal's pair: DPM-Solver++(2M) at 20 NFE against Euler–Maruyama at 250 (run first on the Gaussian models).
GOAL = (("dpmpp_2m", 20), ("euler_maruyama", 250))
BOOTSTRAP = 50

DESIGNS = {
    "pixel": dict(basis="pixel", prior="white", schedule="cosine"),
    "fourier": dict(basis="fourier", prior="power_law", prior_tau=1.0, prior_exponent=2.0, schedule="vp_linear"),
    "pca-soft": dict(basis="pca", prior="white", schedule="soft", labels="data_log_variance", softness=1.0),
}
SMALL_NET = ["model.channels=16", "model.channel_mult=1,2", "model.num_res_blocks=1"]
COMMON = ["train.sample_every=0", "sample.num=0", "train.device=cpu", "train.bf16=off"]
#: name → (preset, overrides, the data set it needs). CPU-sized: training takes about 1.5, 8, 2.5 and 4.5 minutes
#: (digits, mnist14, cld14, blackout at 1100, 160–340, 160 and 50 images/s on the shared 2-core CPU), once: later
#: runs reuse the models in --runs.
MODELS = {
    "digits": ("quickstart", COMMON, "digits"),
    "mnist14": ("mnist", [*COMMON, "data.resolution=14", "model.size=tiny", "train.steps=1500", "train.batch_size=64",
                          "train.lr=0.002", "train.warmup_steps=150", "train.ema_decay=0.999",
                          "train.checkpoint_every=1500", "train.log_every=150"], "mnist"),
    "cld14": ("mdm-mnist-cld", [*COMMON, "data.resolution=14", *SMALL_NET, "model.attn_resolutions=7",
                                "train.steps=800", "train.batch_size=32", "train.lr=0.001", "train.warmup_steps=80",
                                "train.checkpoint_every=800", "train.log_every=100"], "mnist"),
    "blackout": ("blackout-binarized-mnist", [*COMMON, *SMALL_NET, "model.attn_resolutions=", "train.steps=400",
                                              "train.batch_size=32", "train.checkpoint_every=400",
                                              "train.log_every=100"], "binarized-mnist"),
}
#: --smoke: toy training of every model (data sets that are missing are skipped, naming them).
SMOKE_TRAIN = ["train.steps=2", "train.checkpoint_every=2", "train.log_every=1", "train.batch_size=4",
               "train.warmup_steps=1"]


def arguments(argv: list[str] | None) -> argparse.Namespace:
    """The command-line flags (CPU-sized defaults)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nfe", default=",".join(map(str, NFE_TARGETS)), help="NFE targets")
    parser.add_argument("--oracle-num", type=int, default=2000, help="samples per oracle row")
    parser.add_argument("--num", type=int, default=500, help="samples per trained-model row")
    parser.add_argument("--blackout-num", type=int, default=200,
                        help="samples per Blackout row (its per-sample binomial draws are the slow part)")
    parser.add_argument("--trained-nfe-max", type=int, default=100,
                        help="highest NFE target for the trained models' samplers other than euler_maruyama and "
                             "Blackout's, which run at every target (time budget)")
    parser.add_argument("--budget", type=float, default=1500.0, help="seconds for the whole run (training included); "
                        "rows past a model's share of what is left are cut and listed in the record")
    parser.add_argument("--runs", default="runs/nfe", help="where the trained models are kept and reused")
    parser.add_argument("--data-dir", help="data directory (default: $DIFFSPACE_DATA or the user cache)")
    parser.add_argument("--skip-trained", action="store_true", help="the oracle part only")
    parser.add_argument("--models", default=",".join(MODELS), help="trained models to score")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: a shared 2-core "
                        "machine slows down badly when oversubscribed)")
    parser.add_argument("--out", help="record path (default benchmarks/results/nfe-cpu.json)")
    parser.add_argument("--figure", help="plot path (default docs/figures/nfe-cpu.png; beside --out with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="toy sizes (4×4 fields, 2 training steps, a few "
                        "samples, NFE 5 and 10): checks that every part runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.nfe = "5,10" if args.nfe == parser.get_default("nfe") else args.nfe
        args.oracle_num, args.num, args.blackout_num = min(args.oracle_num, 64), min(args.num, 16), min(args.blackout_num, 8)
        if args.runs == parser.get_default("runs"):
            args.runs = tempfile.mkdtemp(prefix="nfe-smoke-")
    try:
        args.targets = [int(t) for t in args.nfe.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--nfe must be comma-separated integers; got {args.nfe!r}")
    if not args.targets or min(args.targets) < 2:
        parser.error(f"--nfe needs targets ≥ 2; got {args.nfe!r}")
    return args


def steps_for(sampler: str, nfe: int, discrete: bool) -> int:
    """The step count whose NFE is nearest `nfe`: N·k + 1 for continuous samplers, N for discrete ones."""
    if discrete:
        return nfe
    return max(1, round((nfe - 1) / PER_STEP.get(sampler, 1)))


def w2_gaussian(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> float:
    """W₂ between N(sample mean, sample covariance) and N(mean, cov): the square root of the Fréchet distance."""
    x = samples.double().flatten(1)
    return math.sqrt(max(frechet_distance(x.mean(0), torch.cov(x.T), mean.flatten(), cov), 0.0))


def oracle_rows(targets: list[int], num: int, field: int) -> list[dict]:
    """Part (a): every Gaussian-family sampler at every NFE target, in each design."""
    shape = (1, field, field)
    variance = power_law_variance(FourierBasis().labels(shape), shape, 3.0, 2.0).double() / field**2
    cov = covariance_in_basis(FourierBasis(), variance)
    mean = torch.zeros(shape, dtype=torch.float64)
    chol = torch.linalg.cholesky(cov)
    fit = torch.randn(4000, cov.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64) @ chol.T
    exact = torch.randn(num, cov.shape[0], generator=torch.Generator().manual_seed(2), dtype=torch.float64) @ chol.T
    floor = w2_gaussian(exact, mean, cov)
    rows = []
    for design, options in DESIGNS.items():
        process = build_process(GaussianConfig(**options), data=fit.view(-1, *shape).float())
        oracle = GaussianOracle(process, mean, cov)
        for sampler in family("gaussian").samplers:
            for target in targets:
                steps = steps_for(sampler, target, False)
                began = time.perf_counter()
                result = get_sampler(sampler)(process, oracle, (num, *shape), steps, torch.Generator().manual_seed(3))
                value = w2_gaussian(result.samples, mean, cov)
                rows.append({"part": "oracle", "case": design, "sampler": sampler, "target": target, "steps": steps,
                             "nfe": result.nfe, "metric": "W2", "value": value, "stderr": None, "floor": floor,
                             "num": num, "seconds": time.perf_counter() - began})
                print(f"oracle {design:9s} {sampler:15s} steps {steps:4d} NFE {result.nfe:4d}  W2 {value:.4f} "
                      f"(floor {floor:.4f})", flush=True)
    return rows


def trained_model(name: str, args: argparse.Namespace) -> tuple[object, float]:
    """The model `name` of MODELS: loaded from runs/<name> if trained there, else trained now (seconds spent)."""
    run_dir = Path(args.runs) / name
    if (run_dir / "model" / "model.safetensors").is_file():
        return load(run_dir / "model", device="cpu"), 0.0
    preset, overrides, _ = MODELS[name]
    overrides = [*overrides, *SMOKE_TRAIN, *(["model.size=tiny"] if name == "digits" else [])] if args.smoke \
        else overrides
    began = time.perf_counter()
    print(f"training {name} ({preset}) in {run_dir}", flush=True)
    train(load_preset(preset).with_overrides(overrides), run_dir, data_dir=args.data_dir, quiet=True)
    return load(run_dir / "model", device="cpu"), time.perf_counter() - began


def plan(trained: object, targets: list[int], nfe_max: int) -> list[tuple[str, int]]:
    """(sampler, NFE target) rows for a trained model: every fitting sampler (less those that need an exact oracle)
    at the targets up to `nfe_max`, euler_maruyama and discrete samplers at every target; the goal's pair first."""
    record = family(trained.config.process.kind)
    discrete = trained.model.process.capabilities.discrete
    rows = [(sampler, target) for target in targets for sampler in record.samplers if sampler not in record.oracle_only
            and (target <= nfe_max or sampler == "euler_maruyama" or discrete)]
    first = [row for row in GOAL if row in rows]
    return first + [row for row in rows if row not in first]


def scorer(trained: object, args: argparse.Namespace) -> tuple[str, Callable[[torch.Tensor], torch.Tensor], FeatureStats]:
    """(metric, 8-bit pictures → features, the training set's reference statistics) for a trained model: raw pixels in
    [0, 1] for the digits (no packaged classifier), else the packaged MNIST classifier's 128 features (binarized
    digits through the MNIST one), as `diffspace eval --metrics domain_fid` computes them."""
    data = dataclasses.replace(trained.config.data, split="train")
    if data.name == "digits":
        images = load_dataset(data, args.data_dir).images
        features = lambda pictures: pictures.double().flatten(1) / 255  # noqa: E731
        return "pixel_fd", features, FeatureStats.of(features(to_uint8(images, trained.facts.levels)))
    weights = None if data.name in CLASSIFIER_DATASETS else str(CLASSIFIER_WEIGHTS)
    extractor = ClassifierFeatures(data.name if weights is None else None, weights, torch.device("cpu"))
    reference = reference_stats(extractor, data, 256 if args.smoke else 10000, args.data_dir)
    return "domain_fid", lambda pictures: extractor.outputs(pictures)[0], reference


def trained_rows(name: str, args: argparse.Namespace,
                 deadline: float) -> tuple[list[dict], list[dict], float, dict]:
    """Part (b) for one model: (rows, rows cut by the deadline, training seconds (0: reused), how it was trained)."""
    trained, seconds = trained_model(name, args)
    t = trained.config.train
    setup = {"preset": MODELS[name][0], "steps": t.steps, "batch_size": t.batch_size, "lr": t.lr,
             "resolution": trained.facts.shape[-1], "reused": seconds == 0.0}
    metric, features_of, reference = scorer(trained, args)
    rows: list[dict] = []
    cut: list[dict] = []
    discrete = trained.model.process.capabilities.discrete
    num = args.blackout_num if discrete else args.num
    for sampler, target in plan(trained, args.targets, args.trained_nfe_max):
        steps = steps_for(sampler, target, discrete)
        if time.perf_counter() > deadline:
            cut.append({"case": name, "sampler": sampler, "target": target, "steps": steps})
            continue
        began = time.perf_counter()
        samples, nfe = generate(trained.model, trained.facts.shape, num, sampler, steps, 0, 256, torch.device("cpu"))
        features = features_of(to_uint8(samples, trained.facts.levels)).double()
        value = fid_from_stats(FeatureStats.of(features, keep=0), reference)
        se = fid_bootstrap_se(features, reference, BOOTSTRAP, torch.Generator().manual_seed(0))
        rows.append({"part": "trained", "case": name, "sampler": sampler, "target": target, "steps": steps,
                     "nfe": nfe, "metric": metric, "value": value, "stderr": se, "num": num,
                     "seconds": time.perf_counter() - began})
        print(f"{name:9s} {sampler:19s} steps {steps:4d} NFE {nfe:4d}  {metric} {value:.4f} ± {se:.4f}", flush=True)
    return rows, cut, seconds, setup


def goal(rows: list[dict]) -> list[dict]:
    """The goal per Gaussian trained model: dpmpp_2m at 20 NFE against euler_maruyama at 250 — met when the
    difference is within its standard error, √(SE₁² + SE₂²)."""
    out = []
    for case in dict.fromkeys(r["case"] for r in rows if r["part"] == "trained"):
        found = {(r["sampler"], r["target"]): r for r in rows if r["case"] == case}
        if not all(pair in found for pair in GOAL):
            continue
        fast, slow = (found[pair] for pair in GOAL)
        se = math.hypot(fast["stderr"], slow["stderr"])
        out.append({"case": case, "metric": fast["metric"], "dpmpp_2m_20": fast["value"], "dpmpp_2m_20_se": fast["stderr"],
                    "euler_maruyama_250": slow["value"], "euler_maruyama_250_se": slow["stderr"],
                    "difference": fast["value"] - slow["value"], "difference_se": se,
                    "met": abs(fast["value"] - slow["value"]) <= se})
    return out


def table(rows: list[dict], targets: list[int]) -> str:
    """Markdown: one line per (case, sampler), one column per NFE target (value ± SE and the NFE spent)."""
    head = "| case | metric | sampler | " + " | ".join(f"NFE≈{t}" for t in targets) + " |"
    lines = [head, "|" + " --- |" * (3 + len(targets))]
    cases = list(dict.fromkeys(r["case"] for r in rows))
    first: dict[tuple, tuple] = {}  # a case's samplers in the order they run at their lowest target
    for index, r in enumerate(rows):
        key = (r["case"], r["metric"], r["sampler"])
        first[key] = min(first.get(key, (math.inf, index)), (r["target"], index))
    for case, metric, sampler in sorted(first, key=lambda k: (cases.index(k[0]), first[k])):
        cells = []
        for target in targets:
            row = next((r for r in rows if (r["case"], r["sampler"], r["target"]) == (case, sampler, target)), None)
            if row is None:
                cells.append("")
                continue
            se = f" ± {row['stderr']:.2g}" if row["stderr"] is not None else ""
            cells.append(f"{row['value']:.3g}{se} ({row['nfe']})")
        lines.append(f"| {case} | {metric} | {sampler} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> Path:
    """Quality against NFE, one panel per case (log–log), exact-sample floors dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in rows))
    colours = {name: f"C{i % 10}" for i, name in enumerate(dict.fromkeys(r["sampler"] for r in rows if r["target"]
                                                                         == min(x["target"] for x in rows)))}
    cols = min(4, len(cases))
    lines = math.ceil(len(cases) / cols)
    fig, axes = plt.subplots(lines, cols, figsize=(4.2 * cols, 3.4 * lines), squeeze=False)
    for ax, case in zip(axes.flat, cases):
        mine = [r for r in rows if r["case"] == case]
        for sampler in sorted(dict.fromkeys(r["sampler"] for r in mine), key=list(colours).index):
            points = sorted((r["nfe"], r["value"], r["stderr"] or 0.0) for r in mine if r["sampler"] == sampler)
            ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker="o",
                        ms=3, capsize=2, label=sampler, color=colours[sampler])
        if mine[0].get("floor"):
            ax.axhline(mine[0]["floor"], color="grey", ls=":", lw=1, label="exact samples")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{case} ({mine[0]['metric']})")
        ax.set_xlabel("NFE")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(cases):]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def _data_present(name: str, data_dir: str | None) -> bool:
    try:
        load_dataset(DataConfig(name=name, split="test", max_items=1), data_dir)
    except DataError:
        return False
    return True


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; write its record and plot; return the record."""
    args = arguments(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("DIFFSPACE_CACHE", str(Path(args.runs) / "cache"))
    began = time.perf_counter()
    deadline = began + args.budget
    rows = oracle_rows(args.targets, args.oracle_num, 4 if args.smoke else 8)
    training: dict[str, float] = {}
    cut: list[dict] = []
    skipped: dict[str, str] = {}
    setups: dict[str, dict] = {}
    names = [] if args.skip_trained else [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    for index, name in enumerate(names):
        if not _data_present(MODELS[name][2], args.data_dir):
            skipped[name] = f"data set {MODELS[name][2]} not found"
            print(f"{name}: skipped ({skipped[name]})", flush=True)
            continue
        share = (deadline - time.perf_counter()) / (len(names) - index)
        model_rows, model_cut, seconds, model_setup = trained_rows(name, args, time.perf_counter() + share)
        rows += model_rows
        cut += model_cut
        training[name] = seconds
        setups[name] = model_setup
    text = table(rows, args.targets)
    print(text)
    goals = goal(rows)
    for g in goals:
        print(f"goal {g['case']}: dpmpp_2m@20 {g['dpmpp_2m_20']:.3f} ± {g['dpmpp_2m_20_se']:.3f} vs "
              f"euler_maruyama@250 {g['euler_maruyama_250']:.3f} ± {g['euler_maruyama_250_se']:.3f}: "
              f"{'met' if g['met'] else 'not met'}")
    record = {"benchmark": "nfe", "device": "cpu", "machine": device_name("cpu"), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "smoke": args.smoke, "nfe_targets": args.targets,
              "oracle_num": args.oracle_num, "num": args.num, "blackout_num": args.blackout_num,
              "trained_nfe_max": args.trained_nfe_max, "budget_s": args.budget,
              "models": setups, "train_seconds": training,
              "skipped": skipped, "cut": cut, "goal": goals, "seconds": time.perf_counter() - began, "rows": rows,
              "table": text}
    out = Path(args.out) if args.out else None
    path = write_record("nfe", "cpu", record, out)
    figure = Path(args.figure) if args.figure else (path.with_suffix(".png") if args.smoke or args.out
                                                    else ROOT / "docs" / "figures" / "nfe-cpu.png")
    record["figure"] = str(plot(rows, figure))
    return record


if __name__ == "__main__":
    main()
