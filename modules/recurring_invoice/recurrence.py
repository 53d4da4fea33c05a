# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime as dt

from dateutil.rrule import rrule, rruleset

from trytond.pool import PoolMeta

# Presets of the recurrence wizards: (freq, default interval)
PRESETS = {
    'weekly': ('weekly', 1),
    'every_n_weeks': ('weekly', None),
    'monthly': ('monthly', 1),
    'bimonthly': ('monthly', 2),
    'quarterly': ('monthly', 3),
    'half_yearly': ('monthly', 6),
    'yearly': ('yearly', 1),
    'every_n_months': ('monthly', None),
    'seasonal': ('monthly', 1),
    }
MONTHS = [
    ('1', "January"),
    ('2', "February"),
    ('3', "March"),
    ('4', "April"),
    ('5', "May"),
    ('6', "June"),
    ('7', "July"),
    ('8', "August"),
    ('9', "September"),
    ('10', "October"),
    ('11', "November"),
    ('12', "December"),
    ]


def to_datetime(date):
    return dt.datetime.combine(date, dt.time())


class RecurrenceRuleSet(metaclass=PoolMeta):
    __name__ = 'sale.subscription.recurrence.rule.set'

    def period_rruleset(self, dtstart):
        """Return the rruleset that gives the end of each period

        It is the rhythm without its month restriction (seasonal rules)
        and without exclusions, so a period lasts one interval."""
        set_ = rruleset()
        for rule in self.rules:
            if not rule.exclusive:
                set_.rrule(rule.rrule(dtstart, period=True))
        return set_

    @classmethod
    def find_or_create(cls, freq, interval, months=None):
        "Return the rule set of a preset, reusing an existing one"
        bymonth = ','.join(str(m) for m in sorted(map(int, months or [])))
        for set_ in cls.search([('rules.freq', '=', freq)]):
            if len(set_.rules) != 1:
                continue
            rule, = set_.rules
            if (rule.freq == freq
                    and rule.interval == interval
                    and not rule.exclusive
                    and (rule.bymonth or '') == bymonth
                    and not any(getattr(rule, n) for n in [
                            'byweekday', 'bymonthday', 'byyearday',
                            'byweekno', 'bysetpos'])):
                return set_
        set_ = cls(name=cls._preset_name(freq, interval, bymonth))
        set_.rules = [{
                'freq': freq,
                'interval': interval,
                'bymonth': bymonth or None,
                }]
        set_.save()
        return set_

    @classmethod
    def _preset_name(cls, freq, interval, bymonth):
        names = {
            ('weekly', 1): "Weekly",
            ('monthly', 1): "Monthly",
            ('monthly', 2): "Every 2 Months",
            ('monthly', 3): "Quarterly",
            ('monthly', 6): "Half-Yearly",
            ('yearly', 1): "Yearly",
            }
        if (freq, interval) in names:
            name = names[(freq, interval)]
        else:
            unit = {'weekly': "Weeks", 'monthly': "Months",
                'yearly': "Years"}[freq]
            name = f"Every {interval} {unit}"
        if bymonth:
            name += f" (Months {bymonth})"
        return name


class RecurrenceRule(metaclass=PoolMeta):
    __name__ = 'sale.subscription.recurrence.rule'

    def rrule(self, dtstart, period=False):
        return rrule(**self._rrule(dtstart, period=period))

    def _rrule(self, dtstart, period=False):
        values = super()._rrule(dtstart)
        if period and self.freq != 'yearly':
            values['bymonth'] = None
        # Anchor on month ends: a rhythm starting on the 29th, 30th or 31st
        # falls on the last day of shorter months instead of skipping them.
        if (self.freq in {'monthly', 'yearly'}
                and dtstart.day > 28
                and not any(values[k] for k in [
                        'byweekday', 'bymonthday', 'byyearday', 'byweekno',
                        'bysetpos'])
                and (self.freq == 'monthly'
                    or not values['bymonth']
                    or len(values['bymonth']) == 1)):
            values['bymonthday'] = list(range(28, dtstart.day + 1))
            values['bysetpos'] = [-1]
            if self.freq == 'yearly' and not values['bymonth']:
                values['bymonth'] = [dtstart.month]
        return values
