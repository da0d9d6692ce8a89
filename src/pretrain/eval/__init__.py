"""Measuring a trained model: held-out loss and bits per byte, benchmark tasks, CORE,
lm-evaluation-harness, contamination, memorization and gates (the ``eval`` stage), and
generation (the ``sample`` stage). All log-likelihoods go through ``scoring.py``."""
