"""Exit codes: 0 success, 2 usage or configuration error (one line naming the
option or file), 1 anything else; 130 (128 + SIGINT, as shells report it) for
a command Ctrl-C cut short. Commands that run until stopped (``run``,
``dev``, ``relay``, ``attach``, ``status --watch``, ``logs -f``) end with 0
on Ctrl-C: that is how they are meant to end."""

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130
