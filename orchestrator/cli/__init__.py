"""The command line: ``relay-orchestrator <command>``, one module per command,
``_main`` builds the parser. Commands import the daemon, the upgrade and the
dev relay only when they run."""
