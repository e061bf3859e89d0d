"""The compiled integrator (panda_fm.systems.compiled) against the numpy lockstep loop: the same numbers (the
same bits, where numpy's elementary functions round as libm's do)."""

from __future__ import annotations

import numpy as np
import pytest

from panda_fm.systems.compiled import apply_straggler_rule, compile_field
from panda_fm.systems.founders import load_founders
from panda_fm.systems.integrate import IntegratorConfig, integrate_batch
from panda_fm.systems.skew import founder_genome, genome_field, leaves, mutate, skew_product, wrapped_mask


def _ic(genome) -> np.ndarray:
    table = load_founders()
    return np.concatenate([np.asarray(table[leaf.name].ic, dtype=float) for leaf in leaves(genome)])


def _both(genomes, dt, n_points, transient, **settings):
    """The batch integrated by the numpy loop and by the compiled kernel."""
    f = genome_field(genomes)
    y0 = np.stack([_ic(g) for g in genomes])
    config = IntegratorConfig(rtol=1e-9, atol=1e-10, **settings)
    return [
        integrate_batch(
            f,
            y0,
            dt,
            n_points,
            transient=transient,
            config=config,
            checked=~wrapped_mask(genomes[0]),
            compiled=compiled,
        )
        for compiled in (False, True)
    ]


def _assert_same(numpy_run, compiled_run) -> None:
    # the same operations in the same order; the last bit may still differ where numpy evaluates an elementary
    # function (a power, a sine) with its own SIMD routine (its AVX-512 code) and the compiled code with libm, and
    # chaos grows that difference (to 1e-8 of the trajectories' range in these runs)
    scale = np.nanmax(np.abs(numpy_run.trajectories))
    np.testing.assert_allclose(
        compiled_run.trajectories, numpy_run.trajectories, rtol=0, atol=1e-7 * scale
    )  # NaN rows included
    np.testing.assert_array_equal(compiled_run.ok, numpy_run.ok)
    np.testing.assert_array_equal(compiled_run.steps, numpy_run.steps)
    assert list(compiled_run.reason) == list(numpy_run.reason)
    assert compiled_run.counts == numpy_run.counts


def test_founder_mutants_are_integrated_bit_for_bit_as_by_the_numpy_loop():
    rng = np.random.default_rng(0)
    genomes = [mutate(founder_genome("Aizawa"), rng, 0.1, 1.0) for _ in range(6)]
    assert compile_field(genome_field(genomes), len(genomes)) is not None
    numpy_run, compiled_run = _both(genomes, 0.05, 600, 2.0)
    assert numpy_run.ok.all()
    _assert_same(numpy_run, compiled_run)


def test_skew_products_and_nested_skews_are_integrated_bit_for_bit():
    rng = np.random.default_rng(1)
    lorenz, rossler, aizawa = (founder_genome(n) for n in ("Lorenz", "Rossler", "Aizawa"))
    skews = [
        skew_product(mutate(lorenz, rng, 0.1, 1.0), mutate(rossler, rng, 0.1, 1.0), 8.0, 3.0, rng)
        for _ in range(4)
    ]
    nested = [skew_product(g, aizawa, 5.0, 1.0, rng) for g in skews]  # a skew product drives Aizawa
    for genomes in (skews, nested):
        numpy_run, compiled_run = _both(genomes, 0.02, 400, 1.0)
        assert numpy_run.ok.any()
        _assert_same(numpy_run, compiled_run)


@pytest.mark.parametrize("straggler_factor", [None, 3.0, 1.2])
def test_drops_and_the_straggler_rule_match_the_lockstep_loop(straggler_factor):
    # wild mutations of Lorenz with a low blow-up limit: members blow up, run long, get cut as stragglers
    rng = np.random.default_rng(1)
    genomes = [mutate(founder_genome("Lorenz"), rng, 2.0, 0.5) for _ in range(30)]
    numpy_run, compiled_run = _both(
        genomes, 0.01, 500, 1.0, max_value=200.0, straggler_factor=straggler_factor
    )
    assert numpy_run.counts["blowup"] > 0 and numpy_run.ok.sum() > 0
    if straggler_factor == 1.2:
        assert numpy_run.counts["timeout"] > 0  # the rule did cut members here
    _assert_same(numpy_run, compiled_run)


def test_a_field_that_does_not_compile_is_integrated_by_the_numpy_loop():
    # Lorenz96's vector field is a Python method in dysts: no compiled leaf
    genome = founder_genome("Lorenz96")
    f = genome_field([genome])
    assert compile_field(f, 1) is None
    period = load_founders()["Lorenz96"].period
    res = integrate_batch(f, _ic(genome)[None], period / 50, 100, transient=period, max_steps=10**6)
    assert res.ok.all() and np.isfinite(res.trajectories).all()


def test_straggler_rule_by_hand():
    ok, blowup = 0, 1
    # 4 members: completions at 10 and 20 steps (half the batch at step 20; median 15, limit 45); the third
    # would complete at 46 (dropped at 46? no: its end falls on the drop step, so it completes), the fourth
    # would blow up at 100 (dropped as a timeout at step 46)
    codes = np.array([ok, ok, ok, blowup])
    steps = np.array([10, 20, 46, 100])
    new_codes, new_steps = apply_straggler_rule(codes, steps, 3.0)
    assert new_codes.tolist() == [ok, ok, ok, 3] and new_steps.tolist() == [10, 20, 46, 46]
    # fewer than half complete: no limit
    codes = np.array([blowup, blowup, ok, blowup])
    assert apply_straggler_rule(codes, steps, 3.0)[0].tolist() == codes.tolist()


def test_progress_counts_every_member():
    rng = np.random.default_rng(2)
    genomes = [mutate(founder_genome("Rossler"), rng, 0.1, 1.0) for _ in range(5)]
    seen = []
    integrate_batch(
        genome_field(genomes),
        np.stack([_ic(g) for g in genomes]),
        0.1,
        50,
        progress=seen.append,
    )
    assert sum(seen) == 5
