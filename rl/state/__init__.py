"""Training state on disk: atomic checkpoint directories and what a run resumes from."""
