"""Train your own network: any `torch.nn.Module` called as `net(x_t, t, **cond)` that returns a tensor shaped like
`x_t` serves every process, sampler and likelihood of diffspace.

The network here is a few lines of user code — a small residual convolutional net with a sinusoidal
embedding of the time added to its features — trained with a plain PyTorch loop on
`process.loss(net, x0)` (the per-sample loss the process derives: ε-matching for the Gaussian family), for
Gaussian diffusion in the DCT basis on the 8×8 digits shipped with diffspace. It is then sampled with the
shared samplers and scored with the ELBO in bits/dim of held-out digits.

    python examples/custom_net.py                         # 1500 steps: minutes on a CPU
    python examples/custom_net.py --toy                   # seconds (what the tests run)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diffspace.data import DataConfig, load_dataset
from diffspace.families.gaussian import GaussianConfig
from diffspace.images import save_grid
from diffspace.metrics import elbo_bpd
from diffspace.nets import sinusoidal_features
from diffspace.process import DataFacts, build_process
from diffspace.samplers import euler_maruyama, heun

from _common import arguments, workspace


class TinyResNet(nn.Module):
    """x_t (B, C, H, W), t (B,) → ε̂ (B, C, H, W): convolutions with the time embedding added to every block."""

    def __init__(self, channels: int, width: int = 32, blocks: int = 2) -> None:
        super().__init__()
        self.width = width
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.GroupNorm(4, width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1)) for _ in range(blocks))
        self.out = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # start from ε̂ = 0
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor, **cond: Tensor) -> Tensor:
        h = self.inp(x)
        emb = self.time(sinusoidal_features(t, self.width))[:, :, None, None]
        for block in self.blocks:
            h = h + block(h + emb)
        return self.out(h)


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    folder = workspace(args.out)
    steps, batch, num, sample_steps, test_num = (20, 16, 8, 10, 16) if args.toy else (1500, 64, 64, 100, 297)
    torch.manual_seed(0)

    train = load_dataset(DataConfig(name="digits", split="train"))
    test = load_dataset(DataConfig(name="digits", split="test", max_items=test_num)).images
    facts = DataFacts(tuple(train.images.shape[1:]), train.info.levels)  # (1, 8, 8), 17 levels
    process = build_process(GaussianConfig(basis="dct", prior="white", schedule="cosine"), train.images, facts)

    in_channels, out_channels = process.network_channels(facts.shape[0])
    assert in_channels == out_channels == 1
    net = TinyResNet(in_channels)
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    for step in range(1, steps + 1):
        index = torch.randint(len(train.images), (batch,), generator=generator)
        loss = process.loss(net, train.images[index], generator=generator).mean()  # per-sample losses, averaged
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(1, steps // 5) == 0:
            print(f"step {step:5d}  loss {loss.item():.4f}")

    net.eval()
    with torch.no_grad():
        for sampler in (euler_maruyama, heun):
            result = sampler(process, net, (num, *facts.shape), sample_steps, torch.Generator().manual_seed(1))
            grid = save_grid(result.samples, folder / f"{sampler.__name__}.png", facts.levels)
            print(f"{sampler.__name__}: {num} samples, NFE {result.nfe}, grid {grid}")
    bits = elbo_bpd(process, net, test, facts.levels, generator=torch.Generator().manual_seed(2))
    print(f"−ELBO of {bits.num} test digits: {bits.value:.3f} ± {bits.stderr:.3f} bits/dim")


if __name__ == "__main__":
    main()
