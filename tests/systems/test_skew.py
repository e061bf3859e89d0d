"""Founders, genomes, operators and batched genome fields."""

from __future__ import annotations

import numpy as np
import pytest

from panda_fm.systems.founders import HELD_OUT, LeafField, load_founders
from panda_fm.systems.skew import (
    Flow,
    Skew,
    dimension,
    founder_genome,
    from_dict,
    genome_field,
    mutate,
    random_coupling,
    split_of,
    structure,
    to_dict,
    wrapped_mask,
)


def test_catalogue_covers_dysts_flows_and_held_out_split():
    founders = load_founders()
    assert len(founders) >= 120
    for f in founders.values():
        assert f.split == ("test" if f.name in HELD_OUT else "train")
        assert len(f.ic) == f.dim and f.rms > 0 and f.period > 0
    assert sum(f.split == "test" for f in founders.values()) >= 15  # MackeyGlass (delay) is not a flow


@pytest.mark.parametrize("name", ["Lorenz", "Lorenz96", "CircadianRhythm", "ForcedVanDerPol", "HyperRossler"])
def test_batched_field_equals_member_by_member(name):
    rng = np.random.default_rng(1)
    genomes = [mutate(founder_genome(name), rng, 0.1, 1.0) for _ in range(5)]
    dim = dimension(genomes[0])
    y = np.asarray(load_founders()[name].ic)[:, None] * (1 + 0.05 * rng.standard_normal((dim, 5)))
    t = np.full(5, 0.7)
    batched = genome_field(genomes)(t, y)
    for i, g in enumerate(genomes):
        np.testing.assert_allclose(
            batched[:, i], genome_field([g])(t[i : i + 1], y[:, i : i + 1])[:, 0], rtol=1e-13
        )


def test_mutation_keeps_sign_when_asked():
    rng = np.random.default_rng(0)
    g = founder_genome("Lorenz")
    kept = [mutate(g, rng, 1.0, keep_sign=1.0) for _ in range(200)]
    assert all(m.params["sigma"] > 0 for m in kept)
    free = [mutate(g, rng, 1.0, keep_sign=0.0) for _ in range(400)]
    flipped = np.mean([m.params["sigma"] < 0 for m in free])
    assert 0.08 < flipped < 0.25  # P(N(1, 1) < 0) = 0.16
    assert mutate(g, np.random.default_rng(5), 0.3, 0.5) == mutate(g, np.random.default_rng(5), 0.3, 0.5)


def test_random_coupling_is_injective_and_zero_padded():
    rng = np.random.default_rng(0)
    for da, db in [(3, 3), (6, 3), (3, 5)]:
        c = random_coupling(da, db, rng)
        assert len(c) == db
        used = [i for i in c if i >= 0]
        assert len(used) == len(set(used)) == min(da, db)


def test_skew_field_is_driver_then_forced_response():
    lor, ros = founder_genome("Lorenz"), founder_genome("Rossler")
    s = Skew(lor, ros, (2, -1, 0), 0.5, 0.25)
    x = np.array([[1.0], [2.0], [3.0]])
    y = np.array([[0.5], [-1.0], [0.2]])
    t = np.zeros(1)
    fa = genome_field([lor])(t, x)[:, 0]
    fb = genome_field([ros])(t, y)[:, 0]
    got = genome_field([s])(t, np.vstack([x, y]))[:, 0]
    np.testing.assert_allclose(got[:3], fa)
    np.testing.assert_allclose(got[3:], 0.25 * fb + 0.5 * np.array([fa[2], 0.0, fa[0]]))
    assert dimension(s) == 6 and split_of(s) == "test" and split_of(lor) == "train"
    assert structure(s) == "skew(Lorenz,Rossler)"


def test_recipe_round_trip_and_validation():
    s = Skew(
        founder_genome("Lorenz"),
        Skew(founder_genome("Aizawa"), founder_genome("Thomas"), (0, 1, 2), 1.0, 2.0),
        (2, -1, 0, -1, 1, -1),
        0.1,
        0.2,
    )
    assert from_dict(to_dict(s)) == s
    assert wrapped_mask(Skew(founder_genome("Lorenz"), founder_genome("Duffing"), (0, 1, 2), 1.0, 1.0)).tolist() == [
        False, False, False, False, False, True,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="coupling has"):
        Skew(founder_genome("Lorenz"), founder_genome("Aizawa"), (0, 1), 1.0, 1.0)
    with pytest.raises(ValueError, match="unknown founder"):
        from_dict({"flow": "NotASystem", "params": {}})
    with pytest.raises(ValueError, match="one structure"):
        genome_field([founder_genome("Lorenz"), founder_genome("Aizawa")])
    assert isinstance(genome_field([Flow("Lorenz", founder_genome("Lorenz").params)]), LeafField)
