# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import logging
import time

logger = logging.getLogger(__name__)

# Seconds to wait before trying again the slices that another process had
# locked: the invoice and the dispatch runs lock the same contracts.
RETRY_DELAYS = [1, 2, 4, 8]


def process_slices(slices, process, delays=None):
    """Call process on each slice of ids, again later for the slices it
    reports as locked by returning False

    Return the slices still locked after the last try."""
    if delays is None:
        delays = RETRY_DELAYS
    skipped = [ids for ids in slices if process(ids) is False]
    for delay in delays:
        if not skipped:
            break
        time.sleep(delay)
        skipped = [ids for ids in skipped if process(ids) is False]
    if skipped:
        logger.warning(
            "%s: %d records locked by another process, left for the next run",
            getattr(process, '__qualname__', process),
            sum(map(len, skipped)))
    return skipped
