"""Seeing what a run does: metrics (JSONL, TensorBoard, W&B) and grids of samples with their rewards."""
