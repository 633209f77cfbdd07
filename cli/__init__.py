"""The `coherency` command line: a thin layer over `crdt`, `edge_sdk`, `lidar_capture`,
`models` and `sync_server`.

Commands only call library APIs and format what they return, one module per command
group (`cli._patients`, `cli._sync`, `cli._server`, ...); `cli.demo` holds the demo's
scenarios. The entry point is `cli.main:main` (also `python -m cli.main`);
`cli.main.cli` is the click command tree.
"""
