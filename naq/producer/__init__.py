"""The producer API: ``Queue``, the first seed's module-level functions, recurring
schedules, the failed registry's calls and the read API. Everything a program that
enqueues jobs, or looks at them, calls."""
