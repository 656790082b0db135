"""Training state on disk: atomic checkpoint directories and the learner's sharded files."""
