"""The in-context experts as batched torch code, on any device (see :mod:`panda_fm.forecasters` for the float64
numpy reference implementation that these reproduce and that the baselines use).

Shape letters: B batch, T time, C channels, H horizon, N training pairs, F features, L delays.
"""
