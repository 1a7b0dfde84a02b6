"""The web dashboard (``naq dashboard``; ``pip install 'naq[dashboard]'``).

``app`` (the pages, their live updates and the actions), ``guard`` (authentication and
CSRF), ``show`` (job arguments, decoded without running anything and masked), ``live``
(the queues' rates). It reads through naq's producer API like any program would; the
front-end files under ``static/vendor`` are put there by the build (``hatch_build.py``).
"""
