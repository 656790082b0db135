"""A training run's relative paths under `ray job submit`.

Ray runs a job in a temporary copy of its `--working-dir`, deleted when the job ends: a relative `run.dir` would
be written there and lost. `scripts/launch_cluster.sh` hands the job the directory it was typed in
(`core.paths.SUBMIT_DIR_ENV`), and here the run's own paths are made absolute against it before the config is
validated: `run.dir`, a `resume` checkpoint path and the config file itself. Every other relative path (weights,
prompt files: each `LocalPath` argument, `eval.prompts`) is looked up in the submit directory first by
`core.paths.resolve_local_path`, in the driver and in every actor alike. Outside a job nothing changes.
"""

from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf

from core.config import ConfigError
from core.paths import in_submit_dir, submit_dir

JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
"""Set by Ray's job supervisor in the environment of every `ray job submit` entrypoint (and nowhere else)."""


def under_job() -> bool:
    """True inside the entrypoint of a `ray job submit`."""
    return JOB_ENV in os.environ


def config_file(path: str) -> str:
    """The config file to read: under a job, a relative one that exists in the submit directory is read there (a
    YAML of the user's next to where they submitted); otherwise `path` as given (the job's working directory)."""
    return (in_submit_dir(path) or path) if under_job() else path


def make_absolute(cfg: DictConfig) -> list[str]:
    """Under a job, point a relative `run.dir` (and `resume` checkpoint path) of `cfg` at the submit directory, in
    place; the lines saying where the outputs go. ConfigError naming run.dir when there is no submit directory to
    resolve it against (a plain `ray job submit`, or a submit directory the driver's node does not have)."""
    if not under_job():
        return []
    run_dir = OmegaConf.select(cfg, "run.dir", throw_on_missing=False)
    resume = OmegaConf.select(cfg, "resume", throw_on_missing=False)
    if isinstance(resume, str) and resume != "auto":
        cfg.resume = in_submit_dir(resume) or resume
    if not isinstance(run_dir, str) or os.path.isabs(os.path.expanduser(run_dir)):
        return [f"outputs go to run.dir={run_dir}"] if isinstance(run_dir, str) else []
    submitted = submit_dir()
    if submitted is None or not os.path.isdir(submitted):
        where = (f"the submit directory {submitted} does not exist on this node" if submitted else
                 "this job was not submitted with scripts/launch_cluster.sh, so its submit directory is unknown")
        raise ConfigError([
            f"run.dir: {run_dir} is relative, and under `ray job submit` it would be written inside Ray's "
            f"temporary copy of the working directory ({os.getcwd()}), deleted when the job ends; {where}. "
            "Set run.dir to an absolute path on storage every node sees, or submit from such a directory with "
            "scripts/launch_cluster.sh"])
    cfg.run.dir = os.path.normpath(os.path.join(submitted, run_dir))
    return [f"outputs go to run.dir={cfg.run.dir} (run.dir={run_dir} is relative to the submit directory "
            f"{submitted})"]
