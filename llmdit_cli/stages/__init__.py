"""Plain functions over loaded components: the CLI, sweeps and tests all call these."""
