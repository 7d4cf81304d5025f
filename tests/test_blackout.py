"""Blackout diffusion and the jump-process framework, checked against exact answers.

Statistical checks use fixed seeds and tolerances derived from the sample size: chi-square
goodness-of-fit tests at significance ALPHA (bins pooled to expected counts ≥ 5), and
McDiarmid's inequality for total-variation distances of N samples,
P(TV ≥ E TV + ε) ≤ exp(−2Nε²) with E TV ≤ ½ Σ_i √(π_i(1 − π_i)/N).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from diffspace.cli import main
from diffspace.config import ConfigError, RunConfig, load_preset
from diffspace.families.blackout import BlackoutConfig
from diffspace.families.blackout.jumps import BirthDeathProcess, DeathProcess, JumpProcess, binomial_pmf, reverse_rates
from diffspace.families.blackout.oracle import BlackoutPosterior
from diffspace.families.blackout.process import BlackoutDiffusion, poisson_loss, survival_schedule
from diffspace.families.blackout.samplers import SAMPLERS, strided_steps
from diffspace.process import DataFacts, build_process, resolve_config
from host_reads import host_reads

ALPHA = 1e-4
MAX = 15


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def toy_law() -> torch.Tensor:
    """A bimodal law on 0…15 with mass everywhere."""
    m = torch.arange(MAX + 1, dtype=torch.float64)
    law = torch.exp(-0.5 * ((m - 3) / 1.2) ** 2) + 0.6 * torch.exp(-0.5 * ((m - 11) / 1.5) ** 2) + 0.05
    return law / law.sum()


def chi_square_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    """Goodness of fit of observed `counts` to `probs`, tail bins pooled until every expected count ≥ 5."""
    expected = probs * counts.sum()
    obs, exp, acc_o, acc_e = [], [], 0.0, 0.0
    for o, e in zip(counts, expected):
        acc_o, acc_e = acc_o + o, acc_e + e
        if acc_e >= 5:
            obs.append(acc_o)
            exp.append(acc_e)
            acc_o = acc_e = 0.0
    obs[-1] += acc_o
    exp[-1] += acc_e
    return float(stats.chisquare(obs, exp).pvalue)


def tv_bound(law: torch.Tensor, n: int, delta: float = ALPHA) -> float:
    """E TV + ε of n exact samples from `law`, exceeded with probability ≤ delta (McDiarmid)."""
    mean = 0.5 * float(torch.sqrt(law * (1 - law) / n).sum())
    return mean + math.sqrt(math.log(1 / delta) / (2 * n))


def total_variation(samples: torch.Tensor, law: torch.Tensor) -> float:
    hist = torch.bincount(samples.flatten().long(), minlength=law.numel()).double() / samples.numel()
    return 0.5 * float((hist - law).abs().sum())


def lifetimes_alive(n0: int, times: list[float], paths: int, seed: int) -> torch.Tensor:
    """Units with Exp(1) lifetimes: the number alive at each time, shape (len(times), paths)."""
    life = torch.empty(paths, n0, dtype=torch.float64).exponential_(1.0, generator=gen(seed))
    return torch.stack([(life > t).sum(1) for t in times])


# ----- schedule and strides ------------------------------------------------------------------
def test_schedule_is_strictly_decreasing_with_logit_linear_in_k() -> None:
    for t_end, steps in [(15.0, 1000), (10.0, 1000), (3.0, 7)]:
        p = survival_schedule(steps, t_end)
        assert p.shape == (steps + 1,) and p[0] == 1.0
        assert (p[1:] < p[:-1]).all()
        assert math.isclose(float(p[-1]), math.exp(-t_end), rel_tol=1e-12)
        logit = torch.logit(p[1:])
        second_difference = logit[2:] - 2 * logit[1:-1] + logit[:-2]
        assert second_difference.abs().max() < 1e-9 * t_end
        assert torch.allclose(logit, -logit.flip(0), atol=1e-9)
    assert math.isclose(float(survival_schedule(1, 5.0)[1]), math.exp(-5.0), rel_tol=1e-12)
    with pytest.raises(ValueError, match="exceed ln 2"):
        survival_schedule(10, 0.5)
    process = BlackoutDiffusion((1, 1, 1), MAX, 20, 10.0)
    assert torch.allclose(process.times(), -torch.log(process.survival))


def test_strided_steps_cover_zero_to_t_strictly_decreasing() -> None:
    assert strided_steps(1000, 3) == [1000, 666, 333, 0]
    assert strided_steps(10, 10) == list(range(10, -1, -1))
    for steps in (1, 7, 99, 100, 333, 999, 1000):
        ks = strided_steps(1000, steps)
        assert ks[0] == 1000 and ks[-1] == 0 and len(ks) == steps + 1
        assert all(a > b for a, b in zip(ks, ks[1:]))
    with pytest.raises(ValueError, match="exceeds the process's num_steps T=1000"):
        strided_steps(1000, 1001)
    with pytest.raises(ValueError, match="at least|≥ 1"):
        strided_steps(1000, 0)


def test_samplers_evaluate_the_network_at_the_strided_times() -> None:
    process = BlackoutDiffusion((1, 2, 2), MAX, 100, 10.0)
    seen: list[float] = []

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(float(t[0]))
        return torch.zeros_like(x)

    result = SAMPLERS["binomial_bridge"](process, net, (3, 1, 2, 2), 7, gen(0))
    assert result.nfe == 7
    assert seen == pytest.approx([k / 100 for k in strided_steps(100, 7)[:-1]])


@pytest.mark.parametrize("name", ["binomial_bridge", "tau_leaping", "stochastic_rounding"])
def test_a_sampler_step_reads_nothing_back_from_the_device(name: str) -> None:
    """No host read (on CUDA: no synchronisation) per step: the schedule is indexed with the steps as integers, and
    the network sees t = k/T computed in float32 as in training."""
    process = BlackoutDiffusion((1, 2, 2), MAX, 100, 10.0)
    seen: list[torch.Tensor] = []

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(t)
        return torch.zeros_like(x)

    reads = [host_reads(lambda: SAMPLERS[name](process, net, (3, 1, 2, 2), steps, gen(0))) for steps in (5, 20)]
    assert reads[0] == reads[1]
    k = torch.tensor(strided_steps(100, 20)[3])
    assert torch.equal(seen[-20 + 3], (k.to(torch.float32) / 100).expand(3))


# ----- forward process -----------------------------------------------------------------------
def test_exponential_lifetimes_match_binomial_thinning() -> None:
    n0, t, paths = 20, 0.7, 20_000
    law = binomial_pmf(torch.tensor(n0), math.exp(-t), n0).numpy()
    alive = lifetimes_alive(n0, [t], paths, seed=1)[0]
    assert chi_square_pvalue(np.bincount(alive.numpy(), minlength=n0 + 1), law) > ALPHA
    process = BlackoutDiffusion((1, 1, 1), n0, 10, 5.0)
    thinned = process.thin(torch.full((paths, 1, 1, 1), float(n0)), math.exp(-t), gen(2))
    assert chi_square_pvalue(np.bincount(thinned.long().flatten().numpy(), minlength=n0 + 1), law) > ALPHA
    gillespie = DeathProcess(n0).simulate(torch.full((5_000,), n0), [t], gen(3))[0]
    assert chi_square_pvalue(np.bincount(gillespie.numpy(), minlength=n0 + 1), law) > ALPHA


def test_thinning_twice_equals_thinning_once() -> None:
    death = DeathProcess(40)
    assert torch.allclose(death.transition(0.3) @ death.transition(0.9), death.transition(1.2), atol=1e-12)
    n0, p1, p2, paths = 40, 0.6, 0.35, 20_000
    process = BlackoutDiffusion((1, 1, 1), n0, 10, 5.0)
    start = torch.full((paths, 1, 1, 1), float(n0))
    twice = process.thin(process.thin(start, p1, gen(4)), p2, gen(5))
    law = binomial_pmf(torch.tensor(n0), p1 * p2, n0).numpy()
    assert chi_square_pvalue(np.bincount(twice.long().flatten().numpy(), minlength=n0 + 1), law) > ALPHA


def test_bridge_law_on_simulated_paths() -> None:
    """Given x_0 and x_t, the count x_s (s < t) is x_t + Binomial(x_0 − x_t, (p_s − p_t)/(1 − p_t))."""
    n0, s, t = 12, 0.3, 1.0
    alive = lifetimes_alive(n0, [s, t], 60_000, seed=6)
    q = (math.exp(-s) - math.exp(-t)) / (1 - math.exp(-t))
    tested = 0
    for n in range(n0 + 1):
        rows = alive[1] == n
        if rows.sum() < 500:
            continue
        births = (alive[0, rows] - n).numpy()
        law = binomial_pmf(torch.tensor(n0 - n), q, n0 - n).numpy()
        assert chi_square_pvalue(np.bincount(births, minlength=n0 - n + 1), law) > ALPHA / (n0 + 1)
        tested += 1
    assert tested >= 5
    process = BlackoutDiffusion((1, 1, 1), MAX, 50, 8.0)
    p = process.survival
    assert float(process.birth_probability(30, 12)) == pytest.approx(float((p[12] - p[30]) / (1 - p[30])), rel=1e-12)
    assert float(process.birth_probability(4, 0)) == 1.0


# ----- the jump framework ----------------------------------------------------------------
def test_reverse_rates_of_the_256_state_death_process() -> None:
    """Matrix exponential vs closed form; W̄_t(n→m) = W(m→n)P_t(m)/P_t(n) reverses time exactly and
    equals the Blackout rate E[x_0 − x_t | x_t = n]·p/(1 − p), which the process computes from an exact posterior."""
    death, t, h = DeathProcess(255), 0.8, 1e-4
    weights = torch.empty(256, dtype=torch.float64).exponential_(1.0, generator=gen(17))
    initial = weights / weights.sum()  # a Dirichlet(1, …, 1) law
    exact = initial @ torch.linalg.matrix_exp(t * death.rates())
    assert torch.allclose(exact, death.marginal(initial, t), atol=1e-12)
    generic = JumpProcess(death.rates())
    assert torch.allclose(generic.marginal(initial, t), exact, atol=1e-12)
    reverse = generic.reverse_rates(initial, t)
    derivative = (generic.marginal(initial, t + h) - generic.marginal(initial, t - h)) / (2 * h)
    assert torch.allclose(exact @ reverse, -derivative, atol=1e-7)
    assert torch.allclose(reverse.sum(1), torch.zeros(256, dtype=torch.float64), atol=1e-9)
    off = reverse - torch.diag(torch.diagonal(reverse)) - torch.diag(torch.diagonal(reverse, 1), 1)
    assert off.abs().max() == 0  # births only: n → n + 1
    p = math.exp(-t)
    joint = initial[:, None] * binomial_pmf(torch.arange(256), p, 255)  # [x_0, x_t]
    posterior_mean = (joint * torch.arange(256.0, dtype=torch.float64)[:, None]).sum(0) / joint.sum(0)
    visited = exact[:-1] > 1e-12
    blackout_rate = (posterior_mean - torch.arange(256.0, dtype=torch.float64)) * p / (1 - p)
    assert torch.allclose(torch.diagonal(reverse, 1)[visited], blackout_rate[:-1][visited], rtol=1e-8)

    process = BlackoutDiffusion((1, 16, 16), 255, 20, 4.0)
    oracle = BlackoutPosterior(process, initial)
    k = 9
    p_k = float(process.survival[k])
    states = torch.arange(256.0).view(1, 1, 16, 16)
    rate = process.remaining(oracle, states, k).double().flatten() * p_k / (1 - p_k)
    marginal = death.marginal(initial, -math.log(p_k))
    expected = torch.diagonal(death.reverse_rates(initial, -math.log(p_k)), 1)
    seen = marginal[:-1] > 1e-9
    assert torch.allclose(rate[:-1][seen], expected[seen], rtol=1e-4, atol=1e-9)
    assert torch.allclose(oracle.marginal(k), marginal, atol=1e-12)


def test_birth_death_example() -> None:
    """Immigration–death: a second process on the same framework. Gillespie paths match the
    matrix exponential, the law relaxes to the truncated Poisson, and at stationarity the
    reverse rates equal the forward ones (detailed balance)."""
    process = BirthDeathProcess(20, birth=3.0, death=1.0)
    q = process.rates()
    assert torch.allclose(q.sum(1), torch.zeros(21, dtype=torch.float64))
    start = torch.zeros(21, dtype=torch.float64)
    start[0] = 1
    assert torch.allclose(process.marginal(start, 30.0), process.stationary(), atol=1e-10)
    paths = process.simulate(torch.zeros(6_000, dtype=torch.long), [0.4, 1.5], gen(7))
    for row, t in zip(paths, [0.4, 1.5]):
        law = process.marginal(start, t).numpy()
        assert chi_square_pvalue(np.bincount(row.numpy(), minlength=21), law) > ALPHA / 2
    assert torch.allclose(reverse_rates(q, process.stationary()), q, atol=1e-9)
    t, h = 0.7, 1e-4
    derivative = (process.marginal(start, t + h) - process.marginal(start, t - h)) / (2 * h)
    assert torch.allclose(process.marginal(start, t) @ process.reverse_rates(start, t), -derivative, atol=1e-7)
    with pytest.raises(ValueError, match="rows must sum to 0"):
        JumpProcess(torch.tensor([[0.0, 1.0], [0.0, 0.0]]))


# ----- loss and bound ------------------------------------------------------------------------
class TabularNet(torch.nn.Module):
    """One raw output per (step k, count n): a network that can represent any E[· | x_t, t]."""

    def __init__(self, process: BlackoutDiffusion) -> None:
        super().__init__()
        self.process = process
        self.raw = torch.nn.Parameter(torch.zeros(process.num_steps + 1, process.max_count + 1, dtype=torch.float64))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n = torch.round((x + 1) * self.process.max_count / 2).long()
        k = torch.round(t * self.process.num_steps).long().view(-1, *([1] * (x.dim() - 1)))
        return self.raw[k, n]


@pytest.mark.parametrize("weights", ["reference", "likelihood", "random"])
def test_poisson_loss_minimiser_is_the_posterior_mean(weights: str) -> None:
    """Minimising the training loss over a tabular network (any positive w_k) gives
    ŷ(n, k) = E[x_0 − x_{t_k} | x_{t_k} = n], within 5 standard errors of each cell's mean."""
    steps, batch = 5, 40_000
    process = BlackoutDiffusion((1, 1, 1), MAX, steps, 3.0, "likelihood" if weights == "likelihood" else "reference")
    if weights == "random":
        random_weights = torch.rand(steps, generator=gen(8), dtype=torch.float64) * 10 + 0.1
        process.weights = lambda: random_weights  # type: ignore[method-assign]
    law = toy_law()
    x0 = (torch.multinomial(law, batch, replacement=True, generator=gen(9)).float() * 2 / MAX - 1).view(-1, 1, 1, 1)
    net = TabularNet(process)
    optimizer = torch.optim.LBFGS(net.parameters(), lr=1, max_iter=200, tolerance_grad=1e-12,
                                  tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = process.loss(net, x0, gen(10)).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    p = process.survival
    if weights == "likelihood":  # the bound's forward chain is conditioned on the empty end x_T = 0
        p = (p - p[-1]) / (1 - p[-1])
    states = torch.arange(MAX + 1, dtype=torch.float64)
    checked = 0
    for k in range(1, steps + 1):
        joint = law[:, None] * binomial_pmf(states.long(), float(p[k]), MAX)  # [x_0, n]
        marginal = joint.sum(0)
        post = joint / marginal.clamp_min(1e-300)
        mean = (post * states[:, None]).sum(0) - states
        var = (post * states[:, None] ** 2).sum(0) - (mean + states) ** 2
        count = marginal * batch / steps
        fitted = (MAX / 2) * torch.nn.functional.softplus(net.raw[k].detach())
        cells = count >= 100
        tolerance = 5 * torch.sqrt(var / count.clamp_min(1)) + 1e-6
        assert ((fitted - mean).abs() <= tolerance)[cells].all(), (k, fitted[cells], mean[cells])
        checked += int(cells.sum())
    assert checked >= 30


def test_poisson_loss_is_nonnegative_and_zero_at_the_target() -> None:
    target = torch.tensor([0.0, 1.0, 3.0, 7.0])
    rate = torch.tensor([0.5, 1.0, 3.0, 2.0])
    loss = poisson_loss(rate, torch.log(rate), target)
    assert (loss >= 0).all() and loss[1] == 0 and loss[2].abs() < 1e-6
    assert poisson_loss(torch.zeros(1), torch.full((1,), -torch.inf), torch.zeros(1)) == 0


def test_per_step_kl_matches_the_direct_sum() -> None:
    """q(ŷ − a log ŷ) + C[k, a] = Σ_j Bin(j; a, q) log(Bin(j; a, q)/Poisson(j; qŷ)) for the bound's tabled constant C."""
    process = BlackoutDiffusion((1, 1, 1), MAX, 1000, 10.0, "likelihood")
    table = process.kl_constant()
    for k in (1, 2, 400, 999, 1000):
        q = float(process.birth_probability(k, k - 1))
        for a in (0, 1, 6, 15):
            for rate in (0.05, 3.0, 14.0):
                j = torch.arange(a + 1, dtype=torch.float64)
                binomial = binomial_pmf(torch.tensor(a), q, a)
                log_poisson = torch.xlogy(j, torch.tensor(q * rate, dtype=torch.float64)) - q * rate - torch.lgamma(j + 1)
                direct = float((binomial * (torch.log(binomial.clamp_min(1e-300)) - log_poisson))[binomial > 0].sum())
                formula = q * (rate - a * math.log(rate)) + float(table[k, a])
                assert formula == pytest.approx(direct, rel=1e-9, abs=1e-12), (k, a, rate)


def exact_tau_leaping_nll(process: BlackoutDiffusion, oracle: BlackoutPosterior) -> torch.Tensor:
    """−log₂ p(x_0) of the τ-leaping model x_{k−1} = min(x_k + Poisson(q_k ŷ), max) from x_T = 0, by dynamic programming."""
    states = torch.arange(MAX + 1, dtype=torch.float64)
    law = torch.zeros(MAX + 1, dtype=torch.float64)
    law[0] = 1
    for k in range(process.num_steps, 0, -1):
        mean = float(process.birth_probability(k, k - 1)) * oracle.expected_remaining(states, k)
        gap = states[None, :] - states[:, None]  # [from, to]
        pois = torch.where(gap >= 0, torch.exp(torch.xlogy(gap.clamp_min(0), mean[:, None]) - mean[:, None]
                                               - torch.lgamma(gap.clamp_min(0) + 1)), torch.zeros_like(gap))
        pois[:, -1] += 1 - pois.sum(1)
        law = law @ pois
    return -torch.log2(law)


def test_nll_bound_bounds_the_exact_model_likelihood() -> None:
    """With T = 4 the τ-leaping model is coarse and its exact likelihood is computable: the
    bound's mean (over x_t and k) must not fall below −log₂ p(x_0) for any x_0."""
    process = BlackoutDiffusion((1, 1, 1), MAX, 4, 6.0, "likelihood")
    oracle = BlackoutPosterior(process, toy_law())
    exact = exact_tau_leaping_nll(process, oracle)
    batch = 8_000
    for x0 in (0, 3, 8, 11, 15):
        data = torch.full((batch, 1, 1, 1), 2 * x0 / MAX - 1)
        bound = process.nll_bound(oracle, data, gen(11 + x0)).double()
        stderr = float(bound.std()) / math.sqrt(batch)
        assert float(bound.mean()) >= float(exact[x0]) - 4 * stderr - 1e-6, (x0, float(bound.mean()), float(exact[x0]))
    assert float(process.loss(oracle, data, gen(1)).mean()) == pytest.approx(float(process.nll_bound(oracle, data, gen(1)).mean()))


def test_nll_bound_is_tight_with_the_exact_posterior_at_t_1000() -> None:
    """With T = 1000 steps and the exact posterior, E_π[bound] is the entropy H(π) in bits, up to
    Monte-Carlo error (it can never be below it)."""
    law = toy_law()
    process = BlackoutDiffusion((1, 1, 1), MAX, 1000, 10.0, "likelihood")
    oracle = BlackoutPosterior(process, law)
    batch = 60_000
    x0 = (torch.multinomial(law, batch, replacement=True, generator=gen(12)).float() * 2 / MAX - 1).view(-1, 1, 1, 1)
    bound = process.nll_bound(oracle, x0, gen(13)).double()
    entropy = float(-(law * torch.log2(law)).sum())
    stderr = float(bound.std()) / math.sqrt(batch)
    print(f"\nE bound = {float(bound.mean()):.4f} ± {stderr:.4f} bits, H(π) = {entropy:.4f} bits")
    assert abs(float(bound.mean()) - entropy) < 4 * stderr


# ----- samplers --------------------------------------------------------------------------
def random_net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """An arbitrary untrained 'network': a smooth function of x and t with large and small outputs."""
    return 3 * torch.sin(5 * x + 7 * t.view(-1, 1, 1, 1)) + 2 * x


@pytest.mark.parametrize("name, options", [("binomial_bridge", {}), ("binomial_bridge", {"rounding": "nearest"}),
                                           ("tau_leaping", {}), ("stochastic_rounding", {}),
                                           ("stochastic_rounding", {"deterministic": True}), ("exact_bridge", {})])
def test_states_are_integer_monotone_and_bounded(name: str, options: dict[str, object]) -> None:
    process = BlackoutDiffusion((1, 3, 3), MAX, 50, 10.0)
    net = BlackoutPosterior(process, toy_law()) if name == "exact_bridge" else random_net
    states = [process.prior_sample((64, 1, 3, 3))]

    def record(info: dict[str, object]) -> None:
        states.append(info["x"].clone())  # type: ignore[union-attr]

    result = SAMPLERS[name](process, net, (64, 1, 3, 3), 50, gen(14), callback=record, **options)
    assert (states[0] == 0).all() and len(states) == 51 and result.nfe == 50
    path = torch.stack(states)
    assert (path == torch.round(path)).all() and path.min() >= 0 and path.max() <= MAX
    assert (path[1:] >= path[:-1]).all()
    assert torch.equal(result.samples, process.from_state(path[-1]))
    assert name in SAMPLERS


def test_toy_total_variation_table() -> None:
    """The end-to-end toy: pixels i.i.d. from a known law on 0…15, the exact posterior in place of
    a network. The exact bridge is exact at every step count; stochastic rounding, τ-leaping and
    the bridge converge as steps grow; deterministic rounding stays biased even at 1000 steps."""
    law = toy_law()
    process = BlackoutDiffusion((1, 1, 1), MAX, 1000, 10.0)
    oracle = BlackoutPosterior(process, law)
    target = oracle.posterior(torch.zeros(1, 1, 1, 1), process.num_steps).flatten()  # P(x_0 | x_T = 0)
    floor = 0.5 * float((target - law).abs().sum())
    batch = 4_000
    bound = tv_bound(law, batch) + floor
    rows = [("exact_bridge", {}), ("binomial_bridge", {}), ("tau_leaping", {}), ("stochastic_rounding", {}),
            ("binomial_bridge", {"rounding": "nearest"}), ("stochastic_rounding", {"deterministic": True})]
    table: dict[str, list[float]] = {}
    for name, options in rows:
        label = name + "".join(f" ({k}={v})" for k, v in options.items())
        table[label] = []
        for steps in (10, 100, 1000):
            result = SAMPLERS[name](process, oracle, (batch, 1, 1, 1), steps, gen(steps), **options)
            table[label].append(total_variation(process.to_state(result.samples), law))
    print(f"\nTV to the truth, {batch} samples (exact sampling stays below {bound:.3f} with prob. ≥ 1 − {ALPHA})")
    print(f"{'sampler':44s} {'10':>7s} {'100':>7s} {'1000':>7s}")
    for label, values in table.items():
        print(f"{label:44s} " + " ".join(f"{v:7.3f}" for v in values))
    assert all(v <= bound for v in table["exact_bridge"])
    for label in ("binomial_bridge", "tau_leaping", "stochastic_rounding"):
        ten, hundred, thousand = table[label]
        assert ten > bound and ten > hundred > thousand and thousand <= bound, label
    assert min(table["stochastic_rounding (deterministic=True)"]) > 0.5


# ----- interface, config, errors, CLI -------------------------------------------------------
def test_process_interface_and_loss_shapes() -> None:
    process = BlackoutDiffusion((1, 4, 4), 255, 100, 15.0)
    counts = torch.randint(0, 256, (6, 1, 4, 4), generator=gen(15)).float()
    x = process.from_state(counts)
    assert x.min() >= -1 and x.max() <= 1 and torch.equal(process.to_state(x), counts)
    assert process.network_channels(3) == (3, 3) and process.state_shape((1, 4, 4)) == (1, 4, 4)
    assert torch.equal(process.prior_sample((2, 1, 4, 4), gen(0)), torch.zeros(2, 1, 4, 4))
    weight = torch.nn.Parameter(torch.tensor(0.1))

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return weight * x + t.view(-1, 1, 1, 1)

    for weighting in ("reference", "likelihood"):
        process = BlackoutDiffusion((1, 4, 4), 255, 100, 15.0, weighting)
        loss = process.loss(net, x, gen(16))
        assert loss.shape == (6,) and loss.dtype == torch.float32 and torch.isfinite(loss).all()
        loss.mean().backward()
        assert weight.grad is not None and torch.isfinite(weight.grad)
    assert (process.loss(net, x, gen(1)) > 0).all()  # bits/dim of 8-bit data under a bad model


def test_bad_input_is_a_clear_error() -> None:
    process = BlackoutDiffusion((1, 2, 2), MAX, 100, 10.0)
    with pytest.raises(ValueError, match="integer counts"):
        process.to_state(torch.full((1, 1, 2, 2), 0.05))
    with pytest.raises(ValueError, match="lie in 0…15"):
        process.check_counts(torch.full((1, 1, 2, 2), 16.0))
    with pytest.raises(ValueError, match="built for"):
        process.to_state(torch.zeros(1, 1, 3, 3))
    with pytest.raises(ValueError, match="exceeds the process's num_steps"):
        SAMPLERS["tau_leaping"](process, random_net, (2, 1, 2, 2), 101)
    with pytest.raises(ValueError, match="rounding"):
        SAMPLERS["binomial_bridge"](process, random_net, (2, 1, 2, 2), 10, rounding="floor")
    with pytest.raises(ValueError, match="exact posterior"):
        SAMPLERS["exact_bridge"](process, random_net, (2, 1, 2, 2), 10)
    with pytest.raises(ValueError, match="weighting"):
        BlackoutDiffusion((1, 2, 2), MAX, 100, 10.0, "elbo")
    with pytest.raises(ValueError, match="probability vector"):
        BlackoutPosterior(process, torch.ones(MAX + 1))
    digits_like = torch.arange(17.0).view(17, 1, 1, 1) * 2 / 16 - 1
    cfg = BlackoutConfig(max_count=255)
    with pytest.raises(ValueError, match="max_count"):
        build_process(cfg, digits_like)
    with pytest.raises(ConfigError, match="process.weighting"):
        RunConfig().with_overrides(["process.kind=blackout", "process.weighting=elbo"])


def test_config_and_presets() -> None:
    cfg = RunConfig().with_overrides(["process.kind=blackout", "process.t_end=12",
                                      "process.max_count=16", "process.num_steps=50"])
    process = build_process(cfg.process, facts=(1, 8, 8))
    assert isinstance(process, BlackoutDiffusion) and process.max_count == 16 and process.num_steps == 50
    assert math.isclose(float(process.survival[-1]), math.exp(-12), rel_tol=1e-12)
    expected = {"blackout-binarized-mnist": (10.0, 2, "binarized-mnist"), "blackout-mnist": (15.0, 256, "mnist"),
                "blackout-cifar10": (15.0, 256, "cifar10")}
    for name, (t_end, levels, data) in expected.items():
        preset = load_preset(name)
        b = preset.process
        assert preset.process.kind == "blackout" and (b.t_end, b.max_count, preset.data.name) == (t_end, None, data)
        assert resolve_config(b, DataFacts((1, 28, 28), levels)).max_count == levels - 1
        assert b.num_steps == 1000 and preset.sample.sampler in SAMPLERS
        assert preset.sample.steps <= b.num_steps and preset.description
    assert load_preset("blackout-cifar10").model.size == "ddpmpp"


def test_cli_trains_and_samples_a_blackout_preset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`diffspace train --preset blackout-binarized-mnist` on the built-in digits (counts 0…16) with
    a tiny network, then `diffspace sample` with each sampler that works without an oracle."""
    monkeypatch.chdir(tmp_path)
    tiny = ["data.name=digits", "data.max_items=64", "model.channels=8",
            "model.channel_mult=1", "model.num_res_blocks=1", "model.attn_resolutions=", "train.steps=3",
            "train.batch_size=16", "train.device=cpu", "sample.num=4", "sample.steps=5"]
    assert main(["train", "--quiet", "--preset", "blackout-binarized-mnist", "--run-dir", "run", *tiny]) == 0
    assert Path("run/samples/final.png").is_file()
    for sampler in ("binomial_bridge", "tau_leaping", "stochastic_rounding"):
        argv = ["sample", "--run", "run", "--num", "3", "--steps", "7", "--sampler", sampler, "--out", f"{sampler}.npz"]
        assert main(argv) == 0
        samples = np.load(f"{sampler}.npz")["samples"]
        counts = (samples + 1) * 16 / 2
        assert samples.shape == (3, 1, 8, 8) and np.allclose(counts, np.round(counts), atol=1e-4)
        assert counts.min() >= 0 and counts.max() <= 16
    assert "7 network evaluations" in capsys.readouterr().out


def test_deaths_are_drawn_with_the_float64_death_probability(monkeypatch: pytest.MonkeyPatch) -> None:
    """Thinning draws deaths Binomial(n, 1 − p) with 1 − p in float64: at p₁ = 1 − 3.06e-7 (t_end 15) a float32
    survival probability would make it 2.98e-7, 2.6% too few deaths in the first steps."""
    import diffspace.families.blackout.process as module

    process = BlackoutDiffusion((1, 2, 2), 255, 1000, 15.0)
    seen = []

    def spy(count, probability, generator):
        seen.append(probability)
        return torch.zeros_like(count)

    monkeypatch.setattr(module, "binomial", spy)
    process.thin(torch.full((1, 1, 2, 2), 255.0), process.survival[1])
    death = seen[0]
    assert death.dtype == torch.float64
    assert float(death.flatten()[0]) == pytest.approx(float(1 - process.survival[1]), rel=1e-12)
    assert float(death.flatten()[0]) == pytest.approx(3.059e-7, rel=1e-3)
