"""ffstream's tests. A package, so that helper modules import as `tests.rig`, `tests.processes`, `tests.media`."""
