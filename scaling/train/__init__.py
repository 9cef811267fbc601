"""Training: what a job is (spec), the per-worker loop with its replicas and augmentation, where it reports and
resumes (sessions, outputs), and the store of pre-trained weights."""
