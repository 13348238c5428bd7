"""Everything that runs inside JupyterHub: the platform service, and later the
authenticator, spawners and metrics."""
