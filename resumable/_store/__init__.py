"""Where a job's progress is kept: the state file, its backup, its lock and its journals."""
