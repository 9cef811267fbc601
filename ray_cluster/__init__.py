"""A scaling study on a Ray cluster of Slurm nodes (JUWELS Booster or any Slurm site), with the MLflow tracking
server on the head node: `python -m ray_cluster submit|status`, see ray_cluster/README.md.

The job script is `juwels_booster.sbatch` rendered per study (`job_script`), started nodes run `node.sh`, the
checks the job runs while its cluster starts are in `in_job`, the config-versus-allocation check in `allocation`,
the study's secrets (Ray's token, the MLflow login) in `credentials`.
"""
from ray_cluster.allocation import Allocation, AllocationError, check_allocation
from ray_cluster.job_script import JobRequest, parse_time, render_job
from ray_cluster.sites import DEFAULT_PORTS, SITES, Site
from ray_cluster.study_jobs import read_jobs, study_status, submit_study

__all__ = ["Allocation", "AllocationError", "check_allocation", "JobRequest", "parse_time", "render_job",
           "DEFAULT_PORTS", "SITES", "Site", "read_jobs", "study_status", "submit_study"]
