"""Training state on disk: atomic checkpoint directories, the learner's sharded files, what a run resumes from,
and file modes that follow the umask."""
