from http_api.conftest import api  # noqa: F401  (a real kernel serving HTTP, per module)
