"""`llmdit compare`: sweep runs as labelled grids, reference pairs, difference images, metrics
(`images`, `build`), an HTML report (`report`) and prompt scores (`score`)."""
