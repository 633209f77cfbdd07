"""Benchmarks of the device store, the merge path and storage size.

Run them with ``python -m benchmarks.run``; see ``benchmarks/README.md`` for what each
figure means and how it is measured.
"""
