"""Bluesky plans for XAFS energy scans and μ-XAFS maps (installed as ``xafs_stream.plans``).

Plans know nothing of workers or analyses: they only move devices and emit documents.
"""
