"""The runtime: the Fleet supervisor and what it runs."""
