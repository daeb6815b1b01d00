"""Exit codes: 0 success, 2 usage or configuration error (one line naming the
option or file), 1 anything else."""

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
