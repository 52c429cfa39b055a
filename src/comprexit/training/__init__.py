"""Training of compressors: data, objectives, the accelerate-based loop, checkpoints and plots."""
