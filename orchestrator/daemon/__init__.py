"""The daemon: the process tree (``_app``), the command feed, dispatcher,
outbox, presence and journal. Never imports the command line or the dev relay."""
