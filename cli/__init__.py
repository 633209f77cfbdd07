"""The `coherency` command line: a thin layer over `edge_sdk` and `crdt`.

Commands only call library APIs and format what they return. The entry point is
`cli.main:main` (also `python -m cli.main`); `cli.main.cli` is the click command tree.
"""
