# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Rhythms of the contracts: presets, month ends and the setup wizards

The invoice recurrence (recurring_invoice) and the dispatch recurrence
(dispatch_order) are both rule sets of sale_subscription.  Each module
extends the rule set models and builds its recurrence wizard with the
mixins below."""
import datetime as dt

from dateutil.rrule import rrule, rruleset

from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.model import fields
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.transaction import Transaction

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
PRESET_SELECTION = [
    ('weekly', "Weekly"),
    ('every_n_weeks', "Every N Weeks"),
    ('monthly', "Monthly"),
    ('bimonthly', "Every 2 Months"),
    ('quarterly', "Quarterly"),
    ('half_yearly', "Half-Yearly"),
    ('yearly', "Yearly"),
    ('every_n_months', "Every N Months"),
    ('seasonal', "Seasonal"),
    ]
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


class SetupRecurrenceError(UserError):
    pass


def to_datetime(date):
    return dt.datetime.combine(date, dt.time())


class RecurrenceRuleSetMixin:
    """Extends sale.subscription.recurrence.rule.set

    A module sets _recurrence_module to the module whose message.xml holds
    the msg_rule_set_* names of the presets."""
    __slots__ = ()
    _recurrence_module = None

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
        """Return the rule set of a preset, reusing one made before

        The rule set is named in the default language of the database and
        translated into every translatable language.  Only a rule set with
        the preset's rule and name is reused, so that a rule set named by
        hand never lends its name to the wizard's choice."""
        pool = Pool()
        Configuration = pool.get('ir.configuration')
        Lang = pool.get('ir.lang')
        transaction = Transaction()
        bymonth = ','.join(str(m) for m in sorted(map(int, months or [])))
        default_language = Configuration.get_language()
        with transaction.set_context(language=default_language):
            name = cls._preset_name(freq, interval, bymonth)
            for set_ in cls.search([
                        ('rules.freq', '=', freq),
                        ('name', '=', name),
                        ]):
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
                    break
            else:
                set_ = cls(name=name)
                set_.rules = [{
                        'freq': freq,
                        'interval': interval,
                        'bymonth': bymonth or None,
                        }]
                set_.save()
        # also for a language made translatable after the rule set
        for lang in Lang.search([
                    ('translatable', '=', True),
                    ('code', '!=', default_language),
                    ]):
            with transaction.set_context(language=lang.code):
                translated = cls(set_.id)
                name = cls._preset_name(freq, interval, bymonth)
                if translated.name != name:
                    translated.name = name
                    translated.save()
        return cls(set_.id)

    @classmethod
    def _preset_name(cls, freq, interval, bymonth):
        "Return the name of the preset in the language of the context"
        pool = Pool()
        Lang = pool.get('ir.lang')
        Month = pool.get('ir.calendar.month')
        module = cls._recurrence_module
        names = {
            ('weekly', 1): 'msg_rule_set_weekly',
            ('monthly', 1): 'msg_rule_set_monthly',
            ('monthly', 2): 'msg_rule_set_bimonthly',
            ('monthly', 3): 'msg_rule_set_quarterly',
            ('monthly', 6): 'msg_rule_set_half_yearly',
            ('yearly', 1): 'msg_rule_set_yearly',
            }
        months = [int(m) for m in bymonth.split(',')] if bymonth else []
        if months and (freq, interval) == ('monthly', 1):
            name = gettext(f'{module}.msg_rule_set_seasonal')
        elif (freq, interval) in names:
            name = gettext(f'{module}.{names[(freq, interval)]}')
        else:
            name = gettext(
                f'{module}.msg_rule_set_every_n_{freq}', interval=interval)
        if months:
            month_names = Month.locale(Lang.get(), field='name')
            name = gettext(
                f'{module}.msg_rule_set_months', name=name,
                months=cls._month_ranges(months, month_names))
        return name

    @staticmethod
    def _month_ranges(months, month_names):
        """Return the months as ranges: "April–October",
        "November–March", "January, March, May"

        A run of three or more months, also across the turn of the year,
        is written as a range."""
        chosen = set(months)
        runs = []
        # start the runs after a month that is not chosen, so that a run
        # across the turn of the year stays whole
        first = next(
            (m % 12 + 1 for m in range(12, 0, -1) if m not in chosen), 1)
        run = []
        for i in range(12):
            month = (first - 1 + i) % 12 + 1
            if month in chosen:
                run.append(month)
            elif run:
                runs.append(run)
                run = []
        if run:
            runs.append(run)
        parts = []
        for run in runs:
            if len(run) >= 3:
                parts.append(
                    f'{month_names[run[0]]}\u2013{month_names[run[-1]]}')
            else:
                parts.extend(month_names[m] for m in run)
        return ', '.join(parts)


class RecurrenceRuleMixin:
    "Extends sale.subscription.recurrence.rule: anchoring on month ends"
    __slots__ = ()

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


class RecurrenceSetupMixin:
    """The rhythm step of a recurrence wizard: a preset, its interval or
    months, and the rule set it stands for

    A module sets _recurrence_module to the module whose message.xml holds
    msg_setup_recurrence_interval and msg_setup_recurrence_months."""
    __slots__ = ()
    _recurrence_module = None

    preset = fields.Selection(
        PRESET_SELECTION, "Rhythm", required=True, sort=False)
    interval = fields.Integer(
        "Interval",
        states={
            'invisible': ~Eval('preset').in_(
                ['every_n_weeks', 'every_n_months']),
            'required': Eval('preset').in_(
                ['every_n_weeks', 'every_n_months']),
            },
        help="The number of weeks or months between two dates.")
    months = fields.MultiSelection(
        MONTHS, "Months", sort=False,
        states={
            'invisible': Eval('preset') != 'seasonal',
            'required': Eval('preset') == 'seasonal',
            },
        help="The months in which the service is provided.")

    @classmethod
    def default_preset(cls):
        return 'monthly'

    @classmethod
    def default_interval(cls):
        return 1

    @classmethod
    def get_preset_values(cls, rule_set):
        "Return the wizard values that describe rule_set, if it is a preset"
        if len(rule_set.rules) != 1:
            return {}
        rule, = rule_set.rules
        if rule.exclusive or rule.freq not in {'weekly', 'monthly', 'yearly'}:
            return {}
        months = [str(m) for m in rule._bymonth or []]
        if months and rule.freq == 'monthly' and rule.interval == 1:
            return {'preset': 'seasonal', 'months': months}
        if months:
            return {}
        for preset, (freq, interval) in PRESETS.items():
            if preset != 'seasonal' and (freq, interval) == (
                    rule.freq, rule.interval):
                return {'preset': preset, 'interval': interval}
        if rule.freq == 'weekly':
            return {'preset': 'every_n_weeks', 'interval': rule.interval}
        if rule.freq == 'monthly':
            return {'preset': 'every_n_months', 'interval': rule.interval}
        return {}

    def check(self):
        module = self._recurrence_module
        if self.preset in {'every_n_weeks', 'every_n_months'}:
            if not self.interval or self.interval < 1:
                raise SetupRecurrenceError(gettext(
                        f'{module}.msg_setup_recurrence_interval'))
        if self.preset == 'seasonal' and not self.months:
            raise SetupRecurrenceError(gettext(
                    f'{module}.msg_setup_recurrence_months'))

    def get_rule(self):
        "Return frequency, interval and months of the preset"
        freq, interval = PRESETS[self.preset]
        if interval is None:
            interval = self.interval
        months = self.months if self.preset == 'seasonal' else None
        return freq, interval, months

    def get_rule_set(self):
        "Return an unsaved rule set for the preview"
        pool = Pool()
        RuleSet = pool.get('sale.subscription.recurrence.rule.set')
        Rule = pool.get('sale.subscription.recurrence.rule')
        freq, interval, months = self.get_rule()
        return RuleSet(rules=[Rule(
                    freq=freq, interval=interval, exclusive=False,
                    byweekday=None, bymonthday=None, byyearday=None,
                    byweekno=None, bysetpos=None, week_start_day=None,
                    bymonth=','.join(sorted(months or [], key=int)) or None)])

    def find_or_create_rule_set(self):
        "Return the saved rule set of the preset"
        pool = Pool()
        RuleSet = pool.get('sale.subscription.recurrence.rule.set')
        return RuleSet.find_or_create(*self.get_rule())


class RecurrenceWizardMixin:
    """The flow of a recurrence wizard on contracts: the rhythm (state
    start, a RecurrenceSetupMixin view), a preview of the next dates (state
    preview) and apply

    A wizard sets _recurrence_field to the contract's rule set field and
    implements check_subscriptions, get_preview_values(subscription) and
    apply_rule_set(rule_set)."""
    __slots__ = ()
    _recurrence_field = None

    def default_start(self, fields):
        pool = Pool()
        Start = pool.get(self.__class__.start.model_name)
        values = {
            'preset': Start.default_preset(),
            'interval': Start.default_interval(),
            'months': [],
            }
        values.update(self.get_start_values(self.record))
        rule_set = getattr(self.record, self._recurrence_field)
        if rule_set:
            values.update(Start.get_preset_values(rule_set))
        return values

    def get_start_values(self, subscription):
        "Return the other values of the start state for the subscription"
        return {}

    def check(self):
        self.check_subscriptions(self.records)
        self.start.check()

    def check_subscriptions(self, subscriptions):
        "Raise if the recurrence of a subscription cannot be set up"
        pass

    def get_subscription(self):
        "Return the first record with the rhythm of the wizard, not saved"
        pool = Pool()
        Subscription = pool.get('sale.subscription')
        return Subscription(**{
                'start_date': self.record.start_date,
                'end_date': self.record.end_date,
                self._recurrence_field: self.start.get_rule_set(),
                })

    def default_preview(self, fields):
        self.check()
        return self.get_preview_values(self.get_subscription())

    def get_preview_values(self, subscription):
        "Return the values of the preview of the unsaved subscription"
        raise NotImplementedError

    def transition_apply(self):
        self.check()
        self.apply_rule_set(self.start.find_or_create_rule_set())
        return 'end'

    def apply_rule_set(self, rule_set):
        "Write rule_set and the other values of the wizard to the records"
        raise NotImplementedError
