"""Synthetic chaotic systems: founders, skew products, integration, attractor tests, evolution, storage."""
