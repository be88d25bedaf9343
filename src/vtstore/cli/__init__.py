"""The `vt` command: one module per subcommand, wired together by `main`."""
