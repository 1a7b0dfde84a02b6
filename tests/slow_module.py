"""A module that takes seconds to import: preloading it keeps a process child starting
(started, not ready) for that long, so a test can stop the executor meanwhile."""

import time

time.sleep(5)
