"""`python -m workers.invoke`: run the invoke worker with settings from the environment."""

from schemas.settings import Settings
from workers.invoke import run
from workers.observability import configure_logging, start_metrics_server

if __name__ == "__main__":
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    start_metrics_server(settings.metrics_port)
    run(settings)
