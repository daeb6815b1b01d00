"""The dev relay: the relay's command bus on loopback, for ``dev``, ``relay``,
the demo and the tests. A tool, not part of the daemon: ``run`` never imports
this package (tests/orchestrator/test_footprint.py).

Its modules: ``_relay`` (start it: ``serve_dev_relay``, the ``DevRelay``
handle, the state file), ``_routes`` (the HTTP face), ``_actions`` (what a
person asks for), ``_store`` and ``_records`` (its state), ``_spec`` (the
OpenAPI document and input checks), ``_asgi_server`` (HTTP/1.1 by h11 on trio),
``_dev`` and ``_demo`` (the ``dev`` command and its tour).
"""
