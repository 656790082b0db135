"""The foundation that `rewards`, `prompts` and `rl` stand on: config files, components by import path, local
paths, the schema checker for plain config sections, device and dtype names, command-line entry points and the
torchvision compatibility fix.

Nothing here imports `rewards`, `prompts` or `rl` (the import-linter contract in `.importlinter` says so), and
importing it changes nothing in the process: the torchvision fix runs only when asked for
(`core.torchvision_compat`).
"""
