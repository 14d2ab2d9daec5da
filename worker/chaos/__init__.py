"""Fault injection ("chaos"): real servers, real worker processes, and a checker that accounts for every event.

`ledger` records what was published, `checker` reads Postgres to say what became of it, `faults` breaks things,
`stack` owns the temporary embedded servers and workers, `scenarios` and `runner` put them together. Used by
`tagworker chaos` and by `tests/chaos/`.
"""
