"""The evolutionary search: a population of chaotic systems grows by mutation and skew products.

Generation 0's population is the founder catalogue. Each generation plans ``tasks_per_generation``
tasks from a generator seeded by ``(seed, shard, generation)``: a task is either ``batch_size`` mutants of
one parent or ``batch_size`` skew products of one (driver, response) pair with random couplings. Workers
integrate each task as one batch and run the attractor tests; the main process then walks the results in
task order, rejects near-duplicates of systems already accepted, writes the rest and adds them to the
population, where they can be parents in later generations. Everything random is drawn in the main
process from that seed, so the same seed gives the same dataset for any number of workers.

A generation is written as one shard at its end: an interrupted run loses at most the generation in
flight and, reopened with the same settings, resumes after the last complete one.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from panda_fm.systems.founders import load_founders
from panda_fm.systems.integrate import IntegratorConfig, integrate_batch
from panda_fm.systems.selection import TESTS, SelectionConfig, descriptor, is_near_duplicate, run_tests
from panda_fm.systems.skew import (
    Genome,
    Skew,
    dimension,
    field_rms,
    founder_genome,
    founders_of,
    from_dict,
    genome_field,
    mutate,
    postprocess_genome,
    random_coupling,
    split_of,
    to_dict,
    wrapped_mask,
)
from panda_fm.systems.store import DatasetWriter, _fsync_write, open_dataset
from panda_fm.systems.summary import Summary

logger = logging.getLogger(__name__)

PROGRESS = "progress.json"
N_POINTS_KEPT = 8  # raw attractor points kept per population member, the ICs of its children


@dataclass(frozen=True)
class EvolveConfig:
    """Settings of the evolutionary search (stored in the dataset; a resume must use the same)."""

    seed: int = 0
    shard: int = 0  # this part's index, with n_shards parts generated independently
    n_shards: int = 1
    n_points: int = 4096  # samples per trajectory (T)
    periods: tuple[float, float] = (40.0, 40.0)  # dominant periods covered, drawn per system in [lo, hi]
    transient_periods: float = 4.0  # integrated and dropped before the first sample
    n_ics: int = 1  # initial conditions per system (K)
    max_dim: int = 12  # dimension cap of a system
    batch_size: int = 64  # systems per task (one integration batch; larger batches amortise Python)
    tasks_per_generation: int = 16  # distinct parents / pairs per generation
    p_skew: float = 0.5  # probability that a task is a skew product rather than mutation
    # Probability that a parent is drawn from the founders rather than the whole population: keeps
    # low-dimensional systems and all founders in play as the population fills with skew products.
    p_founder_parent: float = 0.25
    # Skew pairs have periods within this ratio: a fast driver sampled over a slow response's periods
    # needs more steps than the step budget allows, so such pairs would only be dropped.
    max_period_ratio: float = 4.0
    mutation_scale: tuple[float, float] = (0.1, 0.5)  # relative perturbation scale, drawn per member
    keep_sign: float = 0.5  # probability that a mutated parameter keeps its sign
    skew_mutation_scale: float = 0.05  # small perturbation of skew members, so a batch is diverse
    dedup_tol: float = 0.05  # descriptor distance below which a child is a near-duplicate
    max_generations: int = 10_000
    # Step budget per member per dominant period integrated: smooth founders need 100-1500 at rtol
    # 1e-9; stiff members, which explicit steps crawl through, are dropped as timeouts.
    max_steps_per_period: int = 2000
    integrator: IntegratorConfig = field(default_factory=IntegratorConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.shard < self.n_shards:
            raise ValueError(f"shard must lie in [0, n_shards), got {self.shard}/{self.n_shards}")
        if self.n_points < 64:
            raise ValueError(f"n_points must be >= 64, got {self.n_points}")
        lo, hi = self.periods
        if not 0 < lo <= hi:
            raise ValueError(f"periods must be (lo, hi) with 0 < lo <= hi, got {self.periods}")
        if self.n_ics < 1 or self.batch_size < 1 or self.tasks_per_generation < 1:
            raise ValueError("n_ics, batch_size and tasks_per_generation must be >= 1")
        if self.max_dim < 3:
            raise ValueError(f"max_dim must be >= 3 (the smallest founder), got {self.max_dim}")
        if self.max_steps_per_period < 1:
            raise ValueError(f"max_steps_per_period must be >= 1, got {self.max_steps_per_period}")
        if self.max_period_ratio < 1:
            raise ValueError(f"max_period_ratio must be >= 1, got {self.max_period_ratio}")
        if not (0 <= self.p_skew <= 1 and 0 <= self.keep_sign <= 1 and 0 <= self.p_founder_parent <= 1):
            raise ValueError("p_skew, keep_sign and p_founder_parent are probabilities in [0, 1]")
        if not 0 <= self.mutation_scale[0] <= self.mutation_scale[1]:
            raise ValueError(f"mutation_scale must be (lo, hi) with 0 <= lo <= hi, got {self.mutation_scale}")

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EvolveConfig:
        d = dict(d)
        d["periods"] = tuple(d["periods"])
        d["mutation_scale"] = tuple(d["mutation_scale"])
        d["integrator"] = IntegratorConfig(**d["integrator"])
        d["selection"] = SelectionConfig(**d["selection"])
        return cls(**d)


@dataclass
class Member:
    """A population member: what its children need (recipe, timescale, normaliser, attractor points)."""

    id: str
    genome: Genome
    period: float
    rms: float
    points: np.ndarray  # (M, D) raw states on the attractor
    split: str

    @property
    def dim(self) -> int:
        return self.points.shape[1]


@dataclass
class Task:
    """One integration batch: systems of one structure."""

    generation: int
    index: int
    operator: str
    parents: list[str]
    genomes: list[Genome]
    ics: np.ndarray  # (B, K, D) raw initial states
    n_periods: np.ndarray  # (B,) periods covered by each system's output
    period: float


@dataclass
class Candidate:
    """A system of a task that passed the attractor tests (before near-duplicate rejection)."""

    member: int
    trajectories: np.ndarray  # (K, T, D) float32, wrapped coordinates
    values: dict[str, float]
    descriptor: np.ndarray
    rms: float
    points: np.ndarray  # (M, D) raw


@dataclass
class TaskResult:
    task: Task
    candidates: list[Candidate]
    failures: Counter
    integrate_s: float
    tests_s: float


def founder_population() -> list[Member]:
    """Generation 0: every founder at its curated parameters."""
    return [
        Member(
            f"founder:{f.name}",
            founder_genome(f.name),
            f.period,
            f.rms,
            np.array(f.points or [f.ic]),
            f.split,
        )
        for f in load_founders().values()
    ]


def plan_generation(cfg: EvolveConfig, generation: int, population: list[Member]) -> list[Task]:
    """The tasks of one generation, drawn from a generator seeded by ``(seed, shard, generation)``."""
    rng = np.random.default_rng([cfg.seed, cfg.shard, generation])
    founders = [m for m in population if m.id.startswith("founder:")]

    def pick(pool: list[Member]) -> Member | None:
        narrowed = (
            [m for m in pool if m.id.startswith("founder:")] if rng.random() < cfg.p_founder_parent else pool
        )
        pool = narrowed or pool
        return pool[rng.integers(len(pool))] if pool else None

    small = [m for m in population if m.dim <= cfg.max_dim - 3]
    tasks = []
    for index in range(cfg.tasks_per_generation):
        if rng.random() < cfg.p_skew:
            driver = pick(small)
            if driver is not None:
                fits = [
                    m
                    for m in small
                    if m.dim <= cfg.max_dim - driver.dim
                    and max(m.period, driver.period) <= cfg.max_period_ratio * min(m.period, driver.period)
                ]
                response = pick(fits)
                if response is not None:
                    tasks.append(_skew_task(cfg, generation, index, driver, response, rng))
                    continue
        parent = pick(population) or founders[0]
        tasks.append(_mutation_task(cfg, generation, index, parent, rng))
    return tasks


def _draw_points(member: Member, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` of the member's attractor points, distinct while it has enough."""
    n = len(member.points)
    return member.points[rng.choice(n, size=k, replace=k > n)]


def _draw_periods(cfg: EvolveConfig, rng: np.random.Generator) -> np.ndarray:
    lo, hi = cfg.periods
    return rng.uniform(lo, hi, cfg.batch_size) if hi > lo else np.full(cfg.batch_size, lo)


def _mutation_task(
    cfg: EvolveConfig, generation: int, index: int, parent: Member, rng: np.random.Generator
) -> Task:
    genomes, ics = [], []
    for _ in range(cfg.batch_size):
        scale = rng.uniform(*cfg.mutation_scale)
        genomes.append(mutate(parent.genome, rng, scale, cfg.keep_sign))
        ics.append(_draw_points(parent, cfg.n_ics, rng))
    return Task(
        generation,
        index,
        "mutate",
        [parent.id],
        genomes,
        np.array(ics),
        _draw_periods(cfg, rng),
        parent.period,
    )


def _skew_task(
    cfg: EvolveConfig, generation: int, index: int, driver: Member, response: Member, rng: np.random.Generator
) -> Task:
    genomes, ics = [], []
    for b in range(cfg.batch_size):
        gd, gr = driver.genome, response.genome
        if b > 0 and cfg.skew_mutation_scale > 0:
            gd = mutate(gd, rng, cfg.skew_mutation_scale, 1.0)
            gr = mutate(gr, rng, cfg.skew_mutation_scale, 1.0)
        coupling = random_coupling(driver.dim, response.dim, rng)
        genomes.append(Skew(gd, gr, coupling, 1.0 / driver.rms, 1.0 / response.rms))
        pd = _draw_points(driver, cfg.n_ics, rng)
        pr = _draw_points(response, cfg.n_ics, rng)
        ics.append(np.concatenate([pd, pr], axis=1))
    period = max(driver.period, response.period)
    return Task(
        generation,
        index,
        "skew",
        [driver.id, response.id],
        genomes,
        np.array(ics),
        _draw_periods(cfg, rng),
        period,
    )


def _integrate(
    genomes: list[Genome],
    ics: np.ndarray,
    sample_dt: np.ndarray,
    transient: np.ndarray,
    n_periods: np.ndarray,
    cfg: EvolveConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integrate systems with K ICs each; returns raw ``(B, K, T, D)``, ok ``(B,)``, reasons ``(B,)``."""
    n_sys, k, dim = ics.shape
    members = [g for g in genomes for _ in range(k)]
    res = integrate_batch(
        genome_field(members),
        ics.reshape(n_sys * k, dim),
        sample_dt=np.repeat(sample_dt, k),
        n_points=cfg.n_points,
        transient=np.repeat(transient, k),
        config=cfg.integrator,
        checked=~wrapped_mask(genomes[0]),
        max_steps=np.repeat(np.ceil(cfg.max_steps_per_period * (cfg.transient_periods + n_periods)), k),
    )
    traj = res.trajectories.reshape(n_sys, k, cfg.n_points, dim)
    ok = res.ok.reshape(n_sys, k).all(axis=1)
    reasons = np.array([next((r for r in rs if r), "") for rs in res.reason.reshape(n_sys, k)])
    return traj, ok, reasons


def run_task(task: Task, cfg: EvolveConfig) -> TaskResult:
    """Integrate one task and run the attractor tests on each system (worker side; no randomness)."""
    sample_dt = task.period * task.n_periods / cfg.n_points
    transient = np.full(len(task.genomes), cfg.transient_periods * task.period)
    t0 = time.perf_counter()
    raw, ok, reasons = _integrate(task.genomes, task.ics, sample_dt, transient, task.n_periods, cfg)
    t1 = time.perf_counter()
    failures: Counter = Counter()
    candidates = []
    for b, genome in enumerate(task.genomes):
        if not ok[b]:
            failures[reasons[b] or "integration"] += 1
            continue
        wrapped = np.stack([postprocess_genome(genome, raw[b, i]) for i in range(raw.shape[1])])
        failed, values = run_tests(wrapped[0], float(sample_dt[b]), task.period, cfg.selection)
        if failed:
            failures[failed] += 1
            continue
        raw0 = raw[b, 0]
        pick = np.linspace(len(raw0) // 2, len(raw0) - 1, N_POINTS_KEPT).astype(int)
        candidates.append(
            Candidate(
                member=b,
                trajectories=wrapped.astype(np.float32),
                values=values,
                descriptor=descriptor(wrapped[0], float(sample_dt[b]), task.period, values["lyapunov"]),
                rms=field_rms(genome, raw0),
                points=raw0[pick],
            )
        )
    return TaskResult(task, candidates, failures, t1 - t0, time.perf_counter() - t1)


def _run_task_star(args: tuple[Task, EvolveConfig]) -> TaskResult:
    return run_task(*args)


def make_record(task: Task, cand: Candidate, system_id: str, cfg: EvolveConfig) -> dict[str, Any]:
    """The manifest record of an accepted system: everything needed to regenerate it."""
    genome = task.genomes[cand.member]
    n_periods = float(task.n_periods[cand.member])
    return {
        "id": system_id,
        "split": split_of(genome),
        "dt": task.period * n_periods / cfg.n_points,
        "period": task.period,
        "n_periods": n_periods,
        "n_points": cfg.n_points,
        "transient": cfg.transient_periods * task.period,
        "dim": dimension(genome),
        "genome": to_dict(genome),
        "founders": founders_of(genome),
        "operator": task.operator,
        "parents": task.parents,
        "generation": task.generation,
        "ic": task.ics[cand.member].tolist(),
        "integrator": {"rtol": cfg.integrator.rtol, "atol": cfg.integrator.atol},
        "tests": dict.fromkeys(TESTS, True),
        "values": cand.values,
        "descriptor": cand.descriptor.tolist(),
        "rms": cand.rms,
        "points": cand.points.tolist(),
    }


def regenerate(record: dict[str, Any], config: IntegratorConfig | None = None) -> np.ndarray:
    """Integrate a system again from its manifest record; returns ``(K, T, D)`` float32."""
    for key in ("genome", "ic", "dt", "n_points", "transient"):
        if key not in record:
            raise ValueError(
                f"record {record.get('id')!r} lacks {key!r}; it was not written by panda_fm generate"
            )
    genome = from_dict(record["genome"])
    ics = np.asarray(record["ic"], dtype=float)  # (K, D)
    integ = record.get("integrator", {})
    cfg = config or IntegratorConfig(
        rtol=integ.get("rtol", 1e-9), atol=integ.get("atol", 1e-10), straggler_factor=None
    )
    res = integrate_batch(
        genome_field([genome] * len(ics)),
        ics,
        sample_dt=record["dt"],
        n_points=record["n_points"],
        transient=record["transient"],
        config=cfg,
        checked=~wrapped_mask(genome),
        max_steps=10**9,  # it completed once within its budget
    )
    if not res.ok.all():
        raise ValueError(f"regenerating {record['id']!r} failed: {list(res.reason)}")
    return np.stack([postprocess_genome(genome, t) for t in res.trajectories]).astype(np.float32)


def _member_from_record(rec: dict[str, Any]) -> Member:
    return Member(
        rec["id"],
        from_dict(rec["genome"]),
        rec["period"],
        rec["rms"],
        np.asarray(rec["points"]),
        rec["split"],
    )


def generate(
    out: str | Path, n_systems: int, cfg: EvolveConfig, workers: int = 1, progress: bool = True
) -> Summary:
    """Grow the dataset in ``out`` to ``n_systems`` accepted systems (resuming if it exists).

    Args:
        out: dataset directory.
        n_systems: target number of systems in this part.
        cfg: search settings; must equal the stored ones when resuming.
        workers: worker processes integrating tasks (results do not depend on it).
        progress: show a progress bar.

    Returns:
        The :class:`Summary` of this session.
    """
    if n_systems < 1 or workers < 1:
        raise ValueError(f"need n_systems >= 1 and workers >= 1, got {n_systems} and {workers}")
    out = Path(out)
    start = time.perf_counter()
    summary = Summary()
    writer = DatasetWriter(
        out, shard_size=10**9, metadata={"generator": "panda_fm.evolve", "config": cfg.to_json()}
    )
    # Resume: generations before `generation` are complete; a truncated last one (the run stopped at
    # n_systems inside it) is replayed, skipping the systems it already wrote.
    progress_path = out / PROGRESS
    state = (
        json.loads(progress_path.read_text())
        if progress_path.exists()
        else {"generation": -1, "complete": True}
    )
    last = max([state["generation"]] + [r["generation"] for r in writer.records])
    generation = last + 1 if state.get("complete", True) or last > state["generation"] else last
    population = founder_population()
    descriptors: dict[int, list[np.ndarray]] = {}
    for rec in writer.records:
        if rec["generation"] < generation:
            population.append(_member_from_record(rec))
            descriptors.setdefault(rec["dim"], []).append(np.asarray(rec["descriptor"]))
    n_have = len(writer.records)
    if n_have:
        logger.info("resuming %s: %d systems, continuing at generation %d", out, n_have, generation)
    pool = mp.get_context("fork").Pool(workers) if workers > 1 else None
    bar = tqdm(
        total=n_systems, initial=min(n_have, n_systems), disable=not progress, unit="sys", desc="generate"
    )
    try:
        while n_have < n_systems and generation < cfg.max_generations:
            tasks = plan_generation(cfg, generation, population)
            jobs = [(t, cfg) for t in tasks]
            results = pool.imap(_run_task_star, jobs) if pool else map(_run_task_star, jobs)
            accepted_now = 0
            truncated = False
            for result in results:
                task = result.task
                op = task.operator
                summary.integrate_s += result.integrate_s
                summary.tests_s += result.tests_s
                summary.candidates[op] += len(task.genomes)
                summary.failures.setdefault(op, Counter()).update(result.failures)
                for i, cand in enumerate(result.candidates):
                    if n_have >= n_systems:
                        truncated = True
                        summary.failures[op]["surplus"] += len(result.candidates) - i
                        break
                    dim = cand.trajectories.shape[2]
                    seen = descriptors.setdefault(dim, [])
                    if is_near_duplicate(cand.descriptor, seen, cfg.dedup_tol):
                        summary.failures[op]["duplicate"] += 1
                        continue
                    system_id = f"p{cfg.shard}-g{generation:03d}-t{task.index:03d}-m{cand.member:03d}"
                    record = make_record(task, cand, system_id, cfg)
                    seen.append(cand.descriptor)
                    population.append(_member_from_record(record))
                    if system_id in writer:  # written before an interruption; replayed for the state
                        continue
                    t_io = time.perf_counter()
                    writer.add(record, cand.trajectories)
                    summary.io_s += time.perf_counter() - t_io
                    summary.accepted[task.operator] += 1
                    summary.dims[dim] += 1
                    summary.splits[record["split"]] += 1
                    accepted_now += 1
                    n_have += 1
                    bar.update(1)
                if n_have >= n_systems:
                    # Stop without computing the generation's remaining tasks; mark it truncated.
                    truncated = truncated or task.index < len(tasks) - 1
                    break
            t_io = time.perf_counter()
            writer.flush()
            _fsync_write(
                progress_path,
                json.dumps({"generation": generation, "systems": n_have, "complete": not truncated}).encode(),
            )
            summary.io_s += time.perf_counter() - t_io
            summary.per_generation[generation] = accepted_now
            bar.set_postfix(gen=generation, pop=len(population))
            generation += 1
        finished = True
    finally:
        # On an interruption the generation in flight is not flushed: a resume replays it.
        bar.close()
        if pool is not None:
            pool.terminate()
        summary.wall_s = time.perf_counter() - start
        with open(out / "sessions.jsonl", "a") as fh:  # one line per session, so resumed runs add up
            line = {**summary.to_json(), "systems_total": len(writer.records), "interrupted": not finished}
            fh.write(json.dumps(line) + "\n")
    return summary


def ancestry(records: dict[str, dict[str, Any]], system_id: str) -> list[str]:
    """All ancestors of a system (parents, their parents, ... down to ``founder:NAME``), sorted.

    Args:
        records: manifest records by id (e.g. ``{r["id"]: r for r in open_dataset(root)}``).
        system_id: the system whose lineage is wanted.
    """
    out: set[str] = set()
    stack = list(records[system_id]["parents"])
    while stack:
        parent = stack.pop()
        if parent in out:
            continue
        out.add(parent)
        if parent in records:
            stack.extend(records[parent]["parents"])
    return sorted(out)


def dataset_size_bytes(root: str | Path) -> int:
    """Bytes on disk of a dataset directory."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def check_regeneration(root: str | Path, n: int = 3) -> float:
    """Regenerate the first ``n`` systems of a dataset; returns the largest relative deviation."""
    ds = open_dataset(root)
    worst = 0.0
    for system_id in ds.ids()[:n]:
        stored = np.asarray(ds.load(system_id))
        again = regenerate(ds.record(system_id))
        worst = max(worst, float(np.abs(again - stored).max() / max(np.abs(stored).max(), 1e-12)))
    return worst
