"""Datasets, splits, augmentation and the prepared audio store."""
