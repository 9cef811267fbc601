"""The sweep: what a study trains (plan), each job made concrete (jobs), the hyper-parameter search and its
per-cell early stopping (search), running it all on Ray Tune (tune), and the ledger that makes it resumable."""
