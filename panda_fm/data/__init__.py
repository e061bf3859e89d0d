"""Training data: windows cut from generated trajectories, and their augmentations."""
