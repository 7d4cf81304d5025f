"""Multilevel vs single-level training of a function-space diffusion model, and FNO throughput.

For each case (the `multilevel-grf` and `multilevel-mnist` presets at a CPU-friendly size unless
--full) two runs share everything but the level schedule: the single-level baseline trains
every step at the fine resolution N; the multilevel run first trains a fraction of that many
steps at N/2, then goes on at N for up to the baseline's number of steps, and stops as soon as
it reaches the baseline's final loss (same images per step). Both use the real
`Trainer.train_step`. Every `--eval-every` steps the fine-resolution validation loss (the
training loss on held-out data, fixed times and noise, raw weights) is measured outside the
timed region. L* is the baseline's final loss (mean of its last 3 evaluations); for each run
the table gives the training wall time until the mean of 3 consecutive evaluations first
reaches L*, the ratio multilevel / single (target ≤ 0.6), and both runs' losses at the wall
time of the shorter run. The same times and ratio are also measured in CPU time of the process
(`time.process_time` around the training steps), which a shared, loaded machine distorts far
less than wall time (with one torch thread the two agree on an idle machine); the load average
is recorded at the start of each case and of the run. Then both final models (so: at equal fine validation loss when the
multilevel run reached L*) sample (Euler–Maruyama) at N
and at 2N, scored against data at that resolution: relative spectrum error per octave band,
sliced Wasserstein SW₂ and Riesz MMD². For grf the data at 2N are exact fields; for mnist
they are the test digits enlarged bilinearly (`diffspace.resolution`, area method).

FNO throughput (the issue's size: 14 modes, width 32, 4 layers, batch 128): training images/s
at 32×32 (`Trainer.train_step`, random data) and sampling images/s at 64×64 for 200
Euler–Maruyama steps (measured over --sample-steps steps and scaled to 200).

    python benchmarks/multilevel.py --threads 1     # CPU-sized cases, both presets
    python benchmarks/multilevel.py --cases grf     # one case
    python benchmarks/multilevel.py --full          # the presets' own sizes (GPU)

Prints a table and writes benchmarks/results/multilevel-<device>.json (cases of an earlier run
that this one does not repeat are kept there).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from diffspace.build import Built, Model, build, generate
from diffspace.config import RunConfig, load_preset
from diffspace.data import DatasetInfo, ImageDataset, load_dataset
from diffspace.metrics import function_metrics
from diffspace.multilevel import level_images, process_at, validation_loss
from diffspace.nets import build_net
from diffspace.process import build_process
from diffspace.training.distributed import World
from diffspace.training.loop import Trainer

from records import device_name, record_path, write_record

#: case → (preset, CPU-size overrides, fine resolution, steps, coarse fraction of the steps)
CASES: dict[str, tuple[str, list[str], int, int, float]] = {
    "grf": ("multilevel-grf", ["data.num_samples=4000", "model.modes=6", "model.width=16", "train.batch_size=32",
                               "train.lr=0.002", "train.warmup_steps=50"], 32, 800, 0.75),
    "mnist": ("multilevel-mnist", ["data.max_items=10000", "model.modes=8", "model.width=16", "train.batch_size=32",
                                   "train.lr=0.002", "train.warmup_steps=50"], 28, 1000, 0.75),
}
FULL: dict[str, tuple[int, int, float]] = {"grf": (32, 6000, 2 / 3), "mnist": (28, 20000, 0.7)}


def run_config(case: str, mode: str, device: str, full: bool, seed: int = 0) -> RunConfig:
    """The case's config for `mode` ("off": single level at N, "schedule": N/2 then N), trained with `seed`."""
    preset, overrides, fine, steps, coarse = CASES[case]
    if full:
        overrides = []
        fine, steps, coarse = FULL[case]
    first = int(round(steps * coarse))
    total = steps if mode == "off" else first + steps
    common = [*overrides, f"train.steps={total}", f"train.device={device}", "sample.num=0", f"train.seed={seed}",
              f"train.log_every={steps}", f"train.checkpoint_every={steps}", "multilevel.batch_sizes="]
    if mode == "off":
        return load_preset(preset).with_overrides([*common, "multilevel.mode=off", "multilevel.resolutions=",
                                                   "multilevel.steps="])
    return load_preset(preset).with_overrides(
        [*common, "multilevel.mode=schedule", f"multilevel.resolutions={fine // 2},{fine}",
         f"multilevel.steps={first},{steps}"])


def held_out(cfg: RunConfig, num: int, resolution: int) -> torch.Tensor:
    """`num` held-out data at `resolution`: fresh fields for grf, else the test split brought there through
    diffspace.resolution (the data set's own method: area averaging / bilinear enlargement for images)."""
    data_cfg = dataclasses.replace(cfg.data, split="test", max_items=num, num_samples=num, resolution=0)
    if cfg.data.name == "grf":
        return load_dataset(dataclasses.replace(data_cfg, resolution=resolution)).images
    return level_images(load_dataset(data_cfg).images, resolution, cfg.data.name, cfg.data.resize)


def train_curve(cfg: RunConfig, val: torch.Tensor, eval_every: int, device: str,
                stop_at: float | None = None) -> tuple[list[dict], Built]:
    """Train cfg with Trainer.train_step; fine validation loss every eval_every steps vs training seconds,
    stopping early once the curve reaches `stop_at` (see time_to_reach)."""
    torch.manual_seed(cfg.train.seed)
    built = build(cfg)
    fine = process_at(cfg.process, tuple(val.shape[1:])).to(device)
    curve, seconds, cpu_seconds = [], 0.0, 0.0
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, Path(run_dir), World(), device, None, True, built)
        while trainer.step < cfg.train.steps:
            sync()
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(min(eval_every, cfg.train.steps - trainer.step)):
                trainer.train_step()
            sync()
            seconds += time.perf_counter() - start
            cpu_seconds += time.process_time() - cpu_start
            loss = validation_loss(fine, trainer.model.net, val.to(device), seed=1)
            curve.append({"step": trainer.step, "seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3),
                          "val_loss": loss})
            if stop_at is not None and time_to_reach(curve, stop_at) is not None:
                break
    return curve, built


def time_to_reach(curve: list[dict], target: float, window: int = 3, clock: str = "seconds") -> float | None:
    """Training seconds (`clock`: "seconds" wall, "cpu_seconds" process CPU time) at which the mean of `window`
    consecutive evaluations first is ≤ target."""
    for i in range(window - 1, len(curve)):
        if sum(c["val_loss"] for c in curve[i - window + 1:i + 1]) / window <= target:
            return curve[i][clock]
    return None


def loss_at(curve: list[dict], seconds: float, window: int = 3) -> float:
    """Mean of the last `window` evaluations made within the first `seconds` of training."""
    done = [c["val_loss"] for c in curve if c["seconds"] <= seconds + 1e-9][-window:]
    return sum(done) / len(done)


def sample_metrics(cfg: RunConfig, built: Built, resolution: int, num: int, steps: int, device: str) -> dict:
    """function_metrics of `num` samples at resolution × resolution against held-out data there."""
    model = built.model.to(device)
    process = process_at(cfg.process, (built.dataset.info.channels, resolution, resolution)).to(device)
    view = Model(model.net, process)
    samples, _ = generate(view, (built.dataset.info.channels, resolution, resolution), num, "euler_maruyama",
                          steps, seed=0, batch_size=num, device=torch.device(device))
    data = held_out(cfg, num, resolution)
    return function_metrics(samples, data, generator=torch.Generator().manual_seed(0)).as_dict()


def compare(case: str, device: str, full: bool, eval_every: int, num_samples: int, sample_steps: int,
            seed: int = 0, sample: bool = True) -> dict:
    """Both runs of one case with one training seed: loss curves, time to L*, ratio, and (when `sample`) sample
    metrics at N and 2N."""
    runs, target = {}, None
    load = [round(v, 2) for v in os.getloadavg()]
    for mode in ("off", "schedule"):
        cfg = run_config(case, mode, device, full, seed)
        fine = FULL[case][0] if full else CASES[case][2]
        val = held_out(cfg, 512, fine)
        curve, built = train_curve(cfg, val, eval_every, device, stop_at=target)
        target = sum(c["val_loss"] for c in curve[-3:]) / 3 if target is None else target
        metrics = ({str(r): sample_metrics(cfg, built, r, num_samples, sample_steps, device) for r in (fine, 2 * fine)}
                   if sample else {})
        runs["single" if mode == "off" else "multilevel"] = {
            "levels": list(cfg.multilevel.resolutions) or [fine], "steps": list(cfg.multilevel.steps) or [cfg.train.steps],
            "steps_run": curve[-1]["step"], "curve": curve, "train_seconds": curve[-1]["seconds"],
            "train_cpu_seconds": curve[-1]["cpu_seconds"], "metrics": metrics}
    reach = {name: time_to_reach(run["curve"], target) for name, run in runs.items()}
    ratio = reach["multilevel"] / reach["single"] if reach["multilevel"] and reach["single"] else None
    reach_cpu = {name: time_to_reach(run["curve"], target, clock="cpu_seconds") for name, run in runs.items()}
    ratio_cpu = (reach_cpu["multilevel"] / reach_cpu["single"] if reach_cpu["multilevel"] and reach_cpu["single"]
                 else None)
    budget = min(run["train_seconds"] for run in runs.values())
    same_time = {name: loss_at(run["curve"], budget) for name, run in runs.items()}
    return {"case": case, "seed": seed, "load_average_1_5_15min": load, "target_loss": target,
            "time_to_target": reach, "ratio": ratio, "cpu_time_to_target": reach_cpu, "ratio_cpu": ratio_cpu,
            "equal_time_seconds": budget, "loss_at_equal_time": same_time, "runs": runs}


def summarise(results: list[dict]) -> list[dict]:
    """One flat row per case over its seeds: times to L*, the ratio mean ± standard error over seeds, in wall time
    and in CPU time (a seed whose multilevel run did not reach L* counts with its whole training time, a lower bound
    of its ratio, and is counted in `not_reached`), and the first seed's SW₂ at N and 2N."""
    rows = []
    for case in dict.fromkeys(r["case"] for r in results):
        runs = [r for r in results if r["case"] == case]
        row = {"case": case, "seeds": len(runs), "target_loss": runs[0]["target_loss"]}
        for suffix, reach, ratio, train in (("", "time_to_target", "ratio", "train_seconds"),
                                            ("_cpu", "cpu_time_to_target", "ratio_cpu", "train_cpu_seconds")):
            if any(reach not in r for r in runs):  # an earlier record without CPU times
                continue
            ratios = [r[ratio] if r[ratio] is not None
                      else r["runs"]["multilevel"][train] / r[reach]["single"] for r in runs]
            mean = sum(ratios) / len(ratios)
            se = ((sum((x - mean) ** 2 for x in ratios) / (len(ratios) - 1) / len(ratios)) ** 0.5
                  if len(ratios) > 1 else None)
            row.update({f"single{suffix}_s": sum(r[reach]["single"] or 0 for r in runs) / len(runs),
                        f"multilevel{suffix}_s": sum(r[reach]["multilevel"] or r["runs"]["multilevel"][train]
                                                     for r in runs) / len(runs),
                        f"ratio{suffix}": mean, f"ratio{suffix}_se": se, f"ratios{suffix}": ratios})
        first = runs[0]
        row.update({"not_reached": sum(r["ratio"] is None for r in runs),
                    "coarse_steps": first["runs"]["multilevel"]["steps"][0],
                    "fine_steps_run": first["runs"]["multilevel"]["steps_run"] - first["runs"]["multilevel"]["steps"][0]})
        for name in ("single", "multilevel"):
            for res, m in first["runs"][name]["metrics"].items():
                row[f"sw2_{name}_{res}"] = m["sliced_wasserstein"]
        rows.append(row)
    return rows


def throughput(device: str, sample_steps: int) -> dict:
    """FNO (14 modes, width 32, 4 layers) training images/s at 32×32 and EM sampling images/s at 64×64."""
    cfg = load_preset("multilevel-grf").with_overrides(
        ["model.modes=14", "model.width=32", "model.layers=4", "train.batch_size=128", "multilevel.mode=off",
         "multilevel.resolutions=", "multilevel.steps=", "multilevel.batch_sizes=", "train.steps=100",
         f"train.device={device}", "sample.num=0"])
    images = torch.randn(1024, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    process = build_process(cfg.process, facts=(1, 32, 32))
    net = build_net(cfg.model, 1, 1, (32, 32))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as run_dir:
        info = DatasetInfo("grf", 1, (32, 32), (-1.0, 1.0), None, None)
        trainer = Trainer(cfg, Path(run_dir), World(), device, None, True,
                          Built(ImageDataset(images, None, info), Model(net, process), cfg))
        trainer.train_step()
        sync()
        start, steps = time.perf_counter(), 3 if device == "cpu" else 20
        for _ in range(steps):
            trainer.train_step()
        sync()
        train_ips = 128 * steps / (time.perf_counter() - start)
    sampler_model = Model(trainer.model.net, process_at(cfg.process, (1, 64, 64)).to(device))
    generate(sampler_model, (1, 64, 64), 128, "euler_maruyama", 1, 0, 128, torch.device(device))
    sync()
    start = time.perf_counter()
    generate(sampler_model, (1, 64, 64), 128, "euler_maruyama", sample_steps, 0, 128, torch.device(device))
    sync()
    per_step = (time.perf_counter() - start) / (sample_steps + 1)  # + the final denoising evaluation
    return {"fno": "modes 14, width 32, layers 4", "params_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 3),
            "batch": 128, "train_images_per_sec_32": round(train_ips, 1),
            "sample_images_per_sec_64_200_steps": round(128 / (per_step * 201), 3),
            "sample_steps_timed": sample_steps}


def main() -> None:
    """Run the cases and the throughput figures, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="grf,mnist", help="comma-separated: grf, mnist")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--full", action="store_true", help="the presets' own sizes (GPU-sized)")
    parser.add_argument("--eval-every", type=int, default=40, help="steps between validation losses")
    parser.add_argument("--samples", type=int, default=128, help="samples per resolution for the metrics")
    parser.add_argument("--sample-steps", type=int, default=100, help="Euler–Maruyama steps for the metrics")
    parser.add_argument("--throughput-steps", type=int, default=5, help="timed EM steps at 64×64 (scaled to 200)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per case (sample metrics: the first)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    record = {"device": device, "device_name": device_name(device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "load_average_1_5_15min_start": [round(v, 2) for v in os.getloadavg()], "full": args.full, "sample_steps": args.sample_steps,
              "samples": args.samples, "cases": [], "throughput": None}
    for case in args.cases.split(","):
        for seed in range(args.seeds):
            result = compare(case, device, args.full, args.eval_every, args.samples, args.sample_steps, seed,
                             sample=seed == 0)
            record["cases"].append(result)
            print_case(result)
    record["throughput"] = throughput(device, args.throughput_steps)
    t = record["throughput"]
    print(f"FNO {t['fno']} ({t['params_M']}M params), batch 128 on {device}: "
          f"train {t['train_images_per_sec_32']} images/s at 32×32; "
          f"sample {t['sample_images_per_sec_64_200_steps']} images/s at 64×64 with 200 EM steps")
    path = record_path("multilevel", device)
    if path.is_file():  # keep the cases of an earlier run that this one did not repeat
        ran = {case["case"] for case in record["cases"]}
        earlier = [case for case in json.loads(path.read_text())["cases"] if case["case"] not in ran]
        record["cases"] = earlier + record["cases"]
    record["summary"] = summarise(record["cases"])
    record["load_average_1_5_15min_end"] = [round(v, 2) for v in os.getloadavg()]
    for row in record["summary"]:
        for clock, suffix in (("wall", ""), ("CPU", "_cpu")):
            if f"ratio{suffix}" not in row:
                continue
            se = "" if row[f"ratio{suffix}_se"] is None else f" ± {row[f'ratio{suffix}_se']:.2f}"
            print(f"{row['case']}: ratio multilevel / single {clock} time to L* {row[f'ratio{suffix}']:.2f}{se} over "
                  f"{row['seeds']} seeds ({', '.join(f'{r:.2f}' for r in row[f'ratios{suffix}'])}; "
                  f"{row['not_reached']} not reached)")
    write_record("multilevel", device, record)


def print_case(result: dict) -> None:
    """The table of one case."""
    print(f"\n{result['case']} (seed {result.get('seed', 0)}): target L* = {result['target_loss']:.4f} (single-level "
          "final fine validation loss)")
    print(f"{'run':<11} {'levels':<9} {'steps run/max':<15} {'train s':>8} {'s to L*':>8} {'CPU s':>8} "
          f"{'to L*':>8}  {'res':>4} {'SW2':>7} {'MMD²':>9}  spectrum rel. error per octave")
    for name, run in result["runs"].items():
        reach, reach_cpu = result["time_to_target"][name], result["cpu_time_to_target"][name]
        lead = (f"{name:<11} {'→'.join(map(str, run['levels'])):<9} {str(run['steps_run']) + '/' + '+'.join(map(str, run['steps'])):<15} "
                f"{run['train_seconds']:>8.1f} {reach if reach is None else round(reach, 1)!s:>8} "
                f"{run['train_cpu_seconds']:>8.1f} {reach_cpu if reach_cpu is None else round(reach_cpu, 1)!s:>8}")
        if not run["metrics"]:
            print(lead)
        for i, (res, m) in enumerate(run["metrics"].items()):
            bands = " ".join(f"{e:.2f}" for e in m["spectrum_error"])
            print(f"{lead if i == 0 else ' ' * 72}  {res:>4} {m['sliced_wasserstein']:>7.3f} {m['riesz_mmd']:>9.5f}  {bands}")
    ratio, ratio_cpu = result["ratio"], result["ratio_cpu"]
    print(f"ratio multilevel / single time to L*: wall {'not reached' if ratio is None else f'{ratio:.2f}'}, CPU "
          f"{'not reached' if ratio_cpu is None else f'{ratio_cpu:.2f}'} (load average {result['load_average_1_5_15min']})")
    same = result["loss_at_equal_time"]
    print(f"fine validation loss after {result['equal_time_seconds']:.1f} s of training: "
          f"single {same['single']:.4f}, multilevel {same['multilevel']:.4f}")


if __name__ == "__main__":
    main()
