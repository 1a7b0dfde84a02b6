"""The job's state, in one place: the record and its constructors, the results store,
status, the workers and leader readers, and the writers of job state (cancellation,
dependencies, the failed registry, schedules). Producers, supervisors, the scheduler
and the CLI all read and change job state through these modules."""
