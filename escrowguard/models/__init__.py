"""Offline models: feature definitions shared with streaming, training, bundles, scorers."""
