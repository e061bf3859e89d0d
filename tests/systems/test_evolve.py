"""The evolutionary search end to end on a tiny configuration: records, determinism, resume, merge."""

from __future__ import annotations

import numpy as np
import pytest

from panda_fm.cli import main
from panda_fm.systems.evolve import EvolveConfig, ancestry, generate, regenerate
from panda_fm.systems.founders import HELD_OUT
from panda_fm.systems.integrate import IntegratorConfig
from panda_fm.systems.store import REQUIRED_KEYS, merge_datasets, open_dataset

N = 6


def tiny(**kw) -> EvolveConfig:
    return EvolveConfig(
        seed=3,
        n_points=512,
        periods=(12.0, 18.0),
        transient_periods=2.0,
        batch_size=8,
        tasks_per_generation=3,
        integrator=IntegratorConfig(max_steps_per_point=20, time_budget_s=20.0),
        **kw,
    )


def contents(root):
    ds = open_dataset(root)
    recs = [{k: v for k, v in r.items() if k not in ("shard", "offset")} for r in ds]
    return recs, [np.asarray(ds.load(i)) for i in ds.ids()]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen") / "a"
    summary = generate(root, N, tiny(), workers=1, progress=False)
    return root, summary


def test_records_carry_recipe_and_split(base):
    root, summary = base
    ds = open_dataset(root)
    assert len(ds) == N
    assert sum(summary.accepted.values()) == N
    for rec in ds:
        for key in (
            *REQUIRED_KEYS,
            "genome",
            "founders",
            "parents",
            "ic",
            "generation",
            "tests",
            "descriptor",
        ):
            assert key in rec
        assert rec["split"] == ("test" if set(rec["founders"]) & HELD_OUT else "train")
        assert 3 <= rec["dim"] <= 12
        traj = ds.load(rec["id"])
        assert traj.shape == (1, 512, rec["dim"]) and np.isfinite(traj).all()
    by_id = {r["id"]: r for r in ds}
    for rec in ds:
        lineage = ancestry(by_id, rec["id"])
        assert {f"founder:{name}" for name in rec["founders"]} <= set(lineage)
    text = summary.format()
    assert "accepted" in text and "dimension histogram" in text


def test_regenerate_reproduces_stored_trajectories(base):
    ds = open_dataset(base[0])
    for system_id in ds.ids()[:3]:
        again = regenerate(ds.record(system_id))
        np.testing.assert_allclose(again, ds.load(system_id), rtol=1e-6, atol=1e-6)


def test_same_seed_same_dataset_any_workers_and_resume(base, tmp_path):
    ref_recs, ref_traj = contents(base[0])
    generate(tmp_path / "two_workers", N, tiny(), workers=2, progress=False)
    # An interrupted run: stop after 2 systems (mid-generation), then resume to N.
    generate(tmp_path / "resumed", 2, tiny(), workers=1, progress=False)
    assert len(open_dataset(tmp_path / "resumed")) == 2
    generate(tmp_path / "resumed", N, tiny(), workers=1, progress=False)
    for other in ("two_workers", "resumed"):
        recs, traj = contents(tmp_path / other)
        assert recs == ref_recs, other
        for a, b in zip(traj, ref_traj, strict=True):
            np.testing.assert_array_equal(a, b)


def test_resume_with_other_settings_is_refused(base):
    with pytest.raises(ValueError, match="other settings"):
        generate(base[0], N + 1, tiny(p_skew=0.9), workers=1, progress=False)


def test_cli_shards_and_merge(tmp_path):
    args = [
        "--systems",
        "2",
        "--points",
        "512",
        "--periods",
        "12-18",
        "--batch-size",
        "8",
        "--tasks",
        "2",
        "--no-progress",
    ]
    for i in range(2):
        extra = ["--ics", "2"] if i else []  # part 1: two initial conditions per system
        assert (
            main(["generate", "--out", str(tmp_path / f"part{i}"), "--shard", f"{i}/2", *args, *extra]) == 0
        )
    part1 = open_dataset(tmp_path / "part1")
    for system_id in part1.ids():
        traj = np.asarray(part1.load(system_id))
        assert traj.shape[:2] == (2, 512) and not np.allclose(traj[0], traj[1])
    assert (
        main(["merge", "--out", str(tmp_path / "all"), str(tmp_path / "part0"), str(tmp_path / "part1")]) == 0
    )
    merged = open_dataset(tmp_path / "all")
    assert len(merged) == 4 and {i[:2] for i in merged.ids()} == {"p0", "p1"}
    with pytest.raises(ValueError, match="more than one part"):
        merge_datasets([tmp_path / "part0", tmp_path / "part0"], tmp_path / "dup")
    assert main(["generate", "--out", str(tmp_path / "x"), "--systems", "0"]) == 2
