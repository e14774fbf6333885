"""Synthetic event generators with labelled anomalies, and readers for recorded files."""
