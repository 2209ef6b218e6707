"""The study engine: a run is a pure job (job.py) executed by an executor (executors.py); the runner
(runner.py) schedules jobs and is the only writer of the store."""
