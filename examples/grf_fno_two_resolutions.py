"""Train a Fourier neural operator on Gaussian random fields at two resolutions, then sample at both and beyond.

The `multilevel-grf` preset (function-space diffusion: a trace-class power-law prior in the Fourier basis,
an FNO that predicts the data-space noise) trained with the multilevel schedule — first on 16×16 fields,
then on 32×32 — and sampled at 16, 32 and 64 (never trained on). The fields' true law is known, so each
resolution's samples are compared with freshly generated fields: relative error of the power in each octave
band of |k|, and the sliced Wasserstein distance. (At the default size the training took 11 minutes on the
shared, loaded 2-core development machine; sampling at 64×64 takes longest.)

    python examples/grf_fno_two_resolutions.py            # 1200 steps, then 128 samples per resolution
    python examples/grf_fno_two_resolutions.py --toy      # a few seconds (what the tests run)
"""

from __future__ import annotations

import torch

import diffspace
from diffspace.build import generate
from diffspace.config import load_preset
from diffspace.data import DataConfig, load_dataset
from diffspace.metrics import function_metrics
from diffspace.process import DataFacts
from diffspace.sample import at_resolution
from diffspace.training import train

from _common import arguments, workspace


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    folder = workspace(args.out)
    toy = args.toy
    size = (["model.modes=4", "model.width=8", "model.layers=2", "data.num_samples=64", "train.steps=8",
             "multilevel.steps=6,2", "multilevel.batch_sizes=16,16", "train.checkpoint_every=8", "train.log_every=2"]
            if toy else
            ["model.modes=8", "model.width=16", "data.num_samples=4000", "train.steps=1200",
             "multilevel.steps=900,300", "multilevel.batch_sizes=64,32", "train.checkpoint_every=1200"])
    cfg = load_preset("multilevel-grf").with_overrides(size + ["sample.num=0", "train.device=cpu",
                                                                "train.warmup_steps=2" if toy else "train.warmup_steps=100"])
    run = folder / "grf-fno"
    result = train(cfg, run, quiet=True)
    print(f"trained {run}: levels {cfg.multilevel.resolutions}, {result.step} steps")

    trained = diffspace.load(run / "model", device="cpu")
    num, steps = (8, 10) if toy else (128, 100)
    print(f"{'N':>4}  {'SW2':>8}  relative spectrum error per octave band")
    for n in (16, 32, 64):
        facts = DataFacts((1, n, n), None)
        model = at_resolution(trained.config, trained.model, facts)  # the same network, the process rebuilt at n
        samples, nfe = generate(model, facts.shape, num, "euler_maruyama", steps, seed=0, batch_size=num,
                                device=torch.device("cpu"))
        truth = load_dataset(DataConfig(name="grf", split="test", resolution=n, num_samples=num,
                                        grf_tau=cfg.data.grf_tau, grf_exponent=cfg.data.grf_exponent))
        metrics = function_metrics(samples, truth.images, generator=torch.Generator().manual_seed(0))
        bands = "  ".join(f"{e:.2f}" for e in metrics.spectrum_error)
        seen = "trained" if n in cfg.multilevel.resolutions else "unseen"
        print(f"{n:>4}  {metrics.sliced_wasserstein:8.3f}  {bands}   ({seen}; {num} samples, NFE {nfe})")


if __name__ == "__main__":
    main()
