"""The client's HTTP/1.1 transport on trio sockets (and its httpx adapter)."""
