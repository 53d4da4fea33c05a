# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"The term and notice arithmetic of the contract lifecycle"
import datetime as dt
import unittest

from trytond.modules.recurring_invoice.lifecycle import (
    notice_deadline, term_end)

D = dt.date


class LifecycleDatesTestCase(unittest.TestCase):
    "Test the ends of terms and the notice deadlines (§ 188 BGB)"

    def test_term_end(self):
        "Test the last day of a term across month ends and leap years"
        for start, months, end in [
                (D(2026, 1, 1), 12, D(2026, 12, 31)),
                (D(2026, 5, 1), 1, D(2026, 5, 31)),
                (D(2026, 1, 31), 1, D(2026, 2, 28)),
                (D(2028, 1, 31), 1, D(2028, 2, 29)),
                (D(2026, 3, 31), 1, D(2026, 4, 30)),
                (D(2024, 2, 29), 12, D(2025, 2, 28)),
                (D(2025, 3, 1), 12, D(2026, 2, 28)),
                (D(2027, 3, 1), 12, D(2028, 2, 29)),
                (D(2026, 1, 15), 24, D(2028, 1, 14)),
                ]:
            self.assertEqual(term_end(start, months), end,
                msg=f"{start} + {months} months")

    def test_notice_deadline(self):
        "Test the last day of notice across month ends and leap years"
        for end, period, unit, deadline in [
                (D(2026, 12, 31), 3, 'month', D(2026, 9, 30)),
                (D(2027, 2, 28), 3, 'month', D(2026, 11, 30)),
                (D(2028, 2, 29), 3, 'month', D(2027, 11, 30)),
                (D(2026, 4, 30), 3, 'month', D(2026, 1, 31)),
                (D(2026, 6, 14), 1, 'month', D(2026, 5, 14)),
                (D(2026, 3, 31), 1, 'month', D(2026, 2, 28)),
                (D(2026, 12, 31), 0, 'month', D(2026, 12, 31)),
                (D(2026, 12, 31), 6, 'week', D(2026, 11, 19)),
                (D(2026, 3, 1), 30, 'day', D(2026, 1, 30)),
                ]:
            self.assertEqual(notice_deadline(end, period, unit), deadline,
                msg=f"{period} {unit} to {end}")
        self.assertIsNone(notice_deadline(None, 3, 'month'))
