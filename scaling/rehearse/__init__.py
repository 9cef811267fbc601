"""A rehearsal of a real study on this machine: every stage of its path, on stand-in data and weights in the
real layouts, at a reduced grid, before it spends GPU-hours. `rehearse` (run.py) is the entry point of
`studies/scaling_law.py --rehearse` and of the Slurm path."""
