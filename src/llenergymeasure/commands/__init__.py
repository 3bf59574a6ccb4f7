"""Commands of the `lem` CLI, grouped by area; each module has `register(app)`."""
