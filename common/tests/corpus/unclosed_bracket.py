import logging

log = logging.getLogger(__name__)


def configure(level="INFO"):
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(message)s",

    log.info("configured")


def other():
    return 1
