"""Flow matching against Gaussian diffusion at an equal training budget, across sampling budgets (NFE).

For each data set, two runs share the data, the network (the quickstart's tiny U-Net), the optimizer, the steps,
the batch and the seed, and differ in the process alone: Gaussian diffusion (the `quickstart` preset: pixel basis,
white prior, cosine schedule, ε-prediction) and rectified flow (the `flow-digits` preset: pixel basis, white prior,
conditional-OT path, velocity prediction). Each model (EMA weights) is sampled at NFE ≈ 10, 20, 50, 100 with its
deterministic 2nd-order ODE sampler (Heun on the probability-flow ODE, which spends 2N + 1 NFE on N steps, so its
NFE is one less) and with the 1-NFE-per-step sampler of its family (Euler on the flow ODE; Euler–Maruyama on the
diffusion's reverse SDE, N − 1 steps plus the final denoising step).

Sample quality: on 14×14 MNIST the domain FID of `diffspace eval` (the packaged MNIST classifier's 128 features,
bilinearly resized to 28×28, against the whole training split); on the 8×8 digits no classifier exists, so the
sliced Wasserstein distance SW₂ (256 directions) to the test split. Standard errors by bootstrap over the samples
(they leave out the reference's own noise and the estimators' bias at this sample size; the "data" row, as many test
(digits: training) images in place of samples, shows the floor). Likelihood: −ELBO and probability-flow ODE
(dopri5, Hutchinson) bits/dim of test images, ± s/√n, for each model once (not a function of the sampler).

CPU-sized defaults (one thread, about 20 minutes of CPU): far from converged models; they compare the two processes
at equal cost, not their final quality.

    python benchmarks/flow_vs_diffusion.py --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

import torch

from diffspace.build import generate
from diffspace.config import load_preset
from diffspace.data import load_dataset
from diffspace.images import to_uint8
from diffspace.metrics.bpd import elbo_bpd, ode_bpd
from diffspace.metrics.distances import sliced_wasserstein
from diffspace.metrics.fid import FeatureStats, fid_from_stats
from diffspace.metrics.reference import ClassifierFeatures, reference_stats
from diffspace.model import load
from diffspace.training import train
from records import device_name, write_record

MODELS = {"diffusion": "quickstart", "flow": "flow-digits"}
SAMPLERS = {"diffusion": ("heun", "euler_maruyama"), "flow": ("heun", "euler")}
CASES = {
    "digits": ["data.name=digits"],
    "mnist14": ["data.name=mnist", "data.resolution=14", "model.attn_resolutions=7"],
}
BOOTSTRAP = 50


def arguments() -> argparse.Namespace:
    """The command-line flags (CPU-sized defaults)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="digits,mnist14", help="comma-separated: digits, mnist14")
    parser.add_argument("--data-dir", help="data directory (default: $DIFFSPACE_DATA or the user cache)")
    parser.add_argument("--steps", default="digits=1500,mnist14=1000", help="training steps per case")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--nfe", default="10,20,50,100", help="sampling budgets (network evaluations per sample)")
    parser.add_argument("--num", default="digits=500,mnist14=300", help="samples per (model, sampler, NFE)")
    parser.add_argument("--bpd-num", type=int, default=500, help="test images for the −ELBO bits/dim")
    parser.add_argument("--bpd-repeats", type=int, default=2, help="ELBO draws per test image")
    parser.add_argument("--ode-bpd-num", default="digits=64,mnist14=32", help="test images for ODE bits/dim")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--runs", default="runs/flow_vs_diffusion", help="where the training runs go")
    return parser.parse_args()


def per_case(text: str, cast: type = int) -> dict[str, int]:
    """"digits=1500,mnist14=1000" → {"digits": 1500, "mnist14": 1000}."""
    return {key: cast(value) for key, value in (item.split("=") for item in text.split(","))}


def sampler_steps(sampler: str, nfe: int) -> int:
    """Steps that spend at most `nfe` network evaluations: Heun 2N + 1, Euler–Maruyama N + 1 (denoising step),
    Euler N."""
    if sampler == "heun":
        return max(1, (nfe - 1) // 2)
    return nfe - 1 if sampler == "euler_maruyama" else nfe


def bootstrap_se(statistic, values: torch.Tensor, seed: int) -> float:
    """Standard deviation of `statistic` over bootstrap resamples of the rows of `values`."""
    g = torch.Generator().manual_seed(seed)
    draws = [statistic(values[torch.randint(0, len(values), (len(values),), generator=g)]) for _ in range(BOOTSTRAP)]
    return float(torch.tensor(draws, dtype=torch.float64).std())


class Quality:
    """The case's sample metric: domain FID (mnist14) or SW₂ to the test split (digits), with a bootstrap SE."""

    def __init__(self, case: str, data_cfg, data_dir: str | None, device: str) -> None:
        self.case = case
        if case == "mnist14":
            self.name = "domain FID"
            self.extractor = ClassifierFeatures("mnist", None, device)
            self.reference = reference_stats(self.extractor, dataclasses.replace(data_cfg, split="train"), None,
                                             data_dir)
        else:
            self.name = "SW₂ to test"
            self.test = load_dataset(dataclasses.replace(data_cfg, split="test", max_items=0), data_dir).images.flatten(1)

    def __call__(self, samples: torch.Tensor, levels: int) -> tuple[float, float]:
        """(value, bootstrap SE) of model-space samples on `levels` levels."""
        if self.case == "mnist14":
            features = self.extractor(to_uint8(samples, levels))

            def statistic(rows: torch.Tensor) -> float:
                return fid_from_stats(FeatureStats.of(rows, keep=0), self.reference)
        else:
            features = samples.clamp(-1, 1).flatten(1).double()

            def statistic(rows: torch.Tensor) -> float:
                return float(sliced_wasserstein(rows, self.test, generator=torch.Generator().manual_seed(0)))
        return statistic(features), bootstrap_se(statistic, features, seed=1)


def main() -> None:
    """Train both models per case, sample them at every NFE, score, print the tables and write the record."""
    args = arguments()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps, num, ode_num = per_case(args.steps), per_case(args.num), per_case(args.ode_bpd_num)
    budgets = [int(n) for n in args.nfe.split(",")]
    rows, likelihoods, timings = [], [], {}
    began_all, cpu_all = time.perf_counter(), time.process_time()
    for case in args.cases.split(","):
        common = [*CASES[case], f"train.steps={steps[case]}", f"train.batch_size={args.batch_size}",
                  f"train.checkpoint_every={steps[case]}", f"train.log_every={max(1, steps[case] // 10)}",
                  "train.sample_every=0", "sample.num=0", f"train.device={args.device}"]
        quality = None
        for model_name, preset in MODELS.items():
            cfg = load_preset(preset).with_overrides(common)
            run_dir = Path(args.runs) / f"{case}-{model_name}"
            began = time.perf_counter()
            train(cfg, run_dir, data_dir=args.data_dir, quiet=True)
            timings[f"train_{case}_{model_name}_s"] = time.perf_counter() - began
            trained = load(run_dir, device=args.device, data_dir=args.data_dir)
            facts, model = trained.facts, trained.model.eval()
            if quality is None:
                quality = Quality(case, trained.config.data, args.data_dir, args.device)
                floor = floor_row(case, quality, trained.config.data, args.data_dir, facts.levels, num[case])
                rows.append(floor)
                print(f"{case} data floor: {floor['value']:.3f} ± {floor['se']:.3f}", flush=True)
            began = time.perf_counter()
            for sampler in SAMPLERS[model_name]:
                for budget in budgets:
                    n_steps = sampler_steps(sampler, budget)
                    samples, nfe = generate(model, facts.shape, num[case], sampler, n_steps, 0, 250,
                                            torch.device(args.device))
                    value, se = quality(samples, facts.levels)
                    rows.append({"case": case, "model": model_name, "sampler": sampler, "steps": n_steps,
                                 "nfe": nfe, "budget": budget, "metric": quality.name, "value": value, "se": se,
                                 "num": num[case]})
                    print(f"{case} {model_name} {sampler} NFE {nfe}: {quality.name} {value:.3f} ± {se:.3f}",
                          flush=True)
            timings[f"sample_{case}_{model_name}_s"] = time.perf_counter() - began
            began = time.perf_counter()
            test = load_dataset(dataclasses.replace(trained.config.data, split="test", max_items=args.bpd_num),
                                args.data_dir).images
            elbo = elbo_bpd(model.process, model.net, test, facts.levels, generator=torch.Generator().manual_seed(0),
                            repeats=args.bpd_repeats)
            ode = ode_bpd(model.process, model.net, test[: ode_num[case]], facts.levels,
                          generator=torch.Generator().manual_seed(0))
            timings[f"bpd_{case}_{model_name}_s"] = time.perf_counter() - began
            likelihoods.append({"case": case, "model": model_name, "elbo_bpd": elbo.value, "elbo_se": elbo.stderr,
                                "elbo_num": elbo.num, "ode_bpd": ode.value, "ode_se": ode.stderr, "ode_num": ode.num,
                                "ode_nfe": ode.nfe})
            print(f"{case} {model_name}: −ELBO {elbo.value:.3f} ± {elbo.stderr:.3f}, ODE {ode.value:.3f} ± "
                  f"{ode.stderr:.3f} bits/dim (NFE {ode.nfe:.0f})", flush=True)
    timings["total_wall_s"] = time.perf_counter() - began_all
    timings["total_cpu_s"] = time.process_time() - cpu_all
    print(quality_table(rows, budgets))
    print(likelihood_table(likelihoods))
    record = {"benchmark": "flow_vs_diffusion", "cases": args.cases.split(","), "train_steps": steps,
              "batch_size": args.batch_size, "num_samples": num, "nfe": budgets, "bpd_num": args.bpd_num,
              "bpd_repeats": args.bpd_repeats, "ode_bpd_num": ode_num, "bootstrap": BOOTSTRAP,
              "device": device_name(args.device), "torch": torch.__version__, "machine": platform.machine(),
              "threads": torch.get_num_threads(), "timings_s": timings, "quality": rows, "likelihood": likelihoods,
              "note": "2-core CPU shared with other jobs: timings are upper bounds"}
    write_record("flow_vs_diffusion", args.device, record)


def floor_row(case: str, quality: Quality, data_cfg, data_dir: str | None, levels: int, num: int) -> dict:
    """The metric of `num` real images in place of samples (test images for FID, training images for SW₂)."""
    split = "test" if case == "mnist14" else "train"
    images = load_dataset(dataclasses.replace(data_cfg, split=split, max_items=num), data_dir).images
    value, se = quality(images, levels)
    return {"case": case, "model": f"data ({split})", "sampler": "", "steps": 0, "nfe": 0, "budget": 0,
            "metric": quality.name, "value": value, "se": se, "num": len(images)}


def quality_table(rows: list[dict], budgets: list[int]) -> str:
    """Rows (case, model, sampler) × columns NFE, Markdown."""
    head = "| data | metric | model | sampler | " + " | ".join(f"NFE ≈ {b}" for b in budgets) + " |"
    lines = [head, "|" + " --- |" * (4 + len(budgets))]
    keys = list(dict.fromkeys((r["case"], r["model"], r["sampler"]) for r in rows))
    for case, model, sampler in keys:
        cells = {r["budget"]: r for r in rows if (r["case"], r["model"], r["sampler"]) == (case, model, sampler)}
        metric = next(iter(cells.values()))["metric"]
        if model.startswith("data"):
            floor = cells[0]
            values = [f"{floor['value']:.3f} ± {floor['se']:.3f}"] + [""] * (len(budgets) - 1)
        else:
            values = [f"{cells[b]['value']:.3f} ± {cells[b]['se']:.3f} ({cells[b]['nfe']})" for b in budgets]
        lines.append(f"| {case} | {metric} | {model} | {sampler} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def likelihood_table(likelihoods: list[dict]) -> str:
    """−ELBO and ODE bits/dim per (case, model), Markdown."""
    lines = ["| data | model | −ELBO bits/dim (n) | ODE bits/dim (n, NFE) |", "| --- | --- | --- | --- |"]
    for r in likelihoods:
        lines.append(f"| {r['case']} | {r['model']} | {r['elbo_bpd']:.3f} ± {r['elbo_se']:.3f} ({r['elbo_num']}) | "
                     f"{r['ode_bpd']:.3f} ± {r['ode_se']:.3f} ({r['ode_num']}, {r['ode_nfe']:.0f}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
