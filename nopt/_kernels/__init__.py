"""Compiled update-rule kernels (Cython, nogil, OpenMP)."""
