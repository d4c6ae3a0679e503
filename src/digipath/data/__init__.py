"""Training data: data configs, mask statistics, patch sampling, patient-level splits."""
