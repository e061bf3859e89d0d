"""Evaluation: metrics, baselines, test sets, the benchmark runner, reports and plots.

Nothing in the model imports from here; the benchmark compares checkpoints and classical forecasters on the
same windows (:func:`panda_fm.eval.runner.evaluate`).
"""
