"""Scorer training: batches, optimizer and schedules, the train step,
checkpointing and the loop behind ``train.py``."""
