"""Sweeps: a TOML recipe of settings and axes (`recipe`) run as engine requests in one process,
resumable and shardable (`run`)."""
