"""The platform service: the one gate to metadata, artifacts and jobs.

A FastAPI app that JupyterHub runs as a managed service at /services/automl/.
Every request is authenticated by the hub; every handler checks the caller's
automl scope and scopes every query by the caller's tenant.
"""
