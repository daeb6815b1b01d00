"""The relay client: requests, auth and backoff, the wire types and their
cattrs converter."""
