"""Training machinery that knows nothing about methods: devices, checkpoints, the trainer, evaluation."""
