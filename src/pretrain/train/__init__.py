"""Training: the loop, optimizers and schedules, batches and mixtures, resumable
checkpoints, the spike/NaN guard and monitoring (the ``train`` stage). Uses the model,
the token shard reader and the held-out scorer of ``eval``; nothing of data curation."""
