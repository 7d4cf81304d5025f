"""The README picture: one multilevel model, samples at 14×14, 28×28 and 56×56 (never trained on 56).

Exactly what a user runs, scaled down to a CPU (defaults: FNO with 8 modes, width 32, 4500 steps
of 64 images at 14×14 then 1500 of 32 at 28×28 on 20000 MNIST digits; about 15 minutes on 2 cores):

    diffspace train --preset multilevel-mnist --run-dir runs/multilevel-picture <overrides>
    diffspace sample --run runs/multilevel-picture --num 8 --resolution R --out samples-R.npz   # R = 14, 28, 56

then one row per resolution, each sample enlarged to 112×112 by pixel repetition (so the grid
each was drawn on stays visible), written to docs/multilevel-resolutions.png.

    python benchmarks/multilevel_picture.py [--run-dir DIR] [--out PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffspace.sample import sample_model
from diffspace.config import load_preset
from diffspace.data import to_levels
from diffspace.training import train

ROOT = Path(__file__).resolve().parent.parent
OVERRIDES = ["data.max_items=20000", "model.modes=8", "model.width=32", "train.steps=6000",
             "multilevel.steps=4500,1500", "multilevel.batch_sizes=64,32", "train.batch_size=32", "train.lr=0.002",
             "train.warmup_steps=100", "train.ema_decay=0.995", "train.sample_every=0", "train.checkpoint_every=1000",
             "sample.num=0", "train.device=cpu"]
RESOLUTIONS = (14, 28, 56)
DISPLAY = 112


def main() -> None:
    """Train (or resume) the small run, sample at each resolution, write the picture."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/multilevel-picture")
    parser.add_argument("--out", default=str(ROOT / "docs" / "multilevel-resolutions.png"))
    parser.add_argument("--num", type=int, default=8, help="samples per resolution")
    parser.add_argument("--steps", type=int, default=200, help="Euler–Maruyama steps")
    args = parser.parse_args()
    cfg = load_preset("multilevel-mnist").with_overrides(OVERRIDES)
    train(cfg, args.run_dir)
    rows = []
    for resolution in RESOLUTIONS:
        out = Path(args.run_dir) / f"samples-{resolution}.npz"
        sample_model(args.run_dir, out, args.num, steps=args.steps, sampler="euler_maruyama", seed=resolution,
                   resolution=resolution)
        samples = torch.from_numpy(np.load(out)["samples"])
        pixels = to_levels(samples, 256).to(torch.uint8)[:, 0]
        scale = DISPLAY // resolution
        big = pixels.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        gap = torch.full((DISPLAY, 4), 255, dtype=torch.uint8)
        rows.append(torch.cat([torch.cat([image, gap], 1) for image in big], 1))
    spacer = torch.full((4, rows[0].shape[1]), 255, dtype=torch.uint8)
    grid = torch.cat([torch.cat([row, spacer]) for row in rows])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.numpy()).save(args.out)
    print(f"wrote {args.out}: rows = samples at {', '.join(f'{r}×{r}' for r in RESOLUTIONS)}")


if __name__ == "__main__":
    main()
