"""Analyses built on the LRP engine: FF-RS ranking, feature-map dropout, LRP-max, colour ablation."""
