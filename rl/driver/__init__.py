"""The driver side of a run (verl's single controller): the `Trainer`, which owns the actor groups and calls
their stages step by step, what a run resumes from, and evaluation during training."""
