"""One module per dataset, each exporting `DATASET` (see data/dataset.py); listed in data/registry.py."""
