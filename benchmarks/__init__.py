"""asv benchmarks for nopt (see asv.conf.json; bench_optimizers.py)."""
