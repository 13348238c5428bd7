"""`python -m hub.service`: how JupyterHub starts the service (see jupyterhub_config.py)."""

from urllib.parse import urlparse

import uvicorn

from automl.settings import get_settings

from .app import create_app


def main():
    url = urlparse(get_settings().service_url)
    uvicorn.run(create_app(), host=url.hostname or "127.0.0.1", port=url.port or 10101,
                log_level="info", proxy_headers=False)


if __name__ == "__main__":
    main()
