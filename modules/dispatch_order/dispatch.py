# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from itertools import groupby

from trytond.i18n import gettext
from trytond.model import (
    Index, ModelSQL, ModelView, Workflow, fields, sequence_ordered)
from trytond.modules.company import CompanyReport
from trytond.modules.company.model import employee_field
from trytond.pool import Pool
from trytond.pyson import Bool, Eval, If
from trytond.transaction import Transaction

from .exceptions import DispatchOrderError, DispatchOrderValidationError

# Backgrounds of the orders in the calendar (the text is white)
CALENDAR_COLORS = {
    'to_plan': '#d35400',
    'draft': '#7f8c8d',
    'planned': '#2c6fbb',
    'done': '#2e8b57',
    'cancelled': '#95a5a6',
    }


class Order(Workflow, ModelSQL, ModelView):
    __name__ = 'dispatch.order'
    _rec_name = 'number'

    _states = {
        'readonly': Eval('state').in_(['done', 'cancelled']),
        }

    number = fields.Char(
        "Number", readonly=True,
        help="The main identification of the dispatch order.")
    company = fields.Many2One(
        'company.company', "Company", required=True,
        states={
            'readonly': (
                (Eval('state') != 'draft')
                | Eval('contract', True)
                | Eval('lines', [0])),
            })
    contract = fields.Many2One(
        'sale.subscription', "Contract", ondelete='RESTRICT',
        domain=[
            ('company', '=', Eval('company', -1)),
            If(Bool(Eval('party')),
                ('party', '=', Eval('party', -1)),
                ()),
            ],
        states={
            'readonly': (Eval('state') != 'draft') | Bool(Eval('key_date')),
            },
        help="The contract that the dispatch order comes from.")
    party = fields.Many2One(
        'party.party', "Party", required=True,
        context={
            'company': Eval('company', -1),
            },
        states={
            'readonly': (Eval('state') != 'draft') | Bool(Eval('contract')),
            },
        depends={'company'},
        help="The customer at whose place the service is provided.")
    service_address = fields.Many2One(
        'party.address', "Service Address",
        domain=[
            ('party', '=', Eval('party', -1)),
            ],
        states=_states,
        help="Where the service is provided.")
    contact = fields.Many2One(
        'party.contact_mechanism', "Contact",
        context={
            'company': Eval('company', -1),
            },
        search_context={
            'related_party': Eval('party'),
            },
        states=_states,
        depends={'company', 'party'})
    description = fields.Char("Description", states=_states)
    lines = fields.One2Many(
        'dispatch.order.line', 'order', "Lines", states=_states)
    employee = fields.Many2One(
        'company.employee', "Employee",
        domain=[
            ('company', '=', Eval('company', -1)),
            ],
        states=_states,
        help="The technician who carries out the order.")
    planning_date = fields.Date(
        "Planning Date",
        states={
            'readonly': Eval('state').in_(['done', 'cancelled']),
            },
        help="The day the dispatcher planned the order for.")
    key_date = fields.Date(
        "Key Date", readonly=True,
        help="The date of the contract's rhythm the order was created for.")
    calendar_date = fields.Function(
        fields.Date(
            "Date",
            states={
                'readonly': Eval('state').in_(['done', 'cancelled']),
                },
            help="The planning date, or else the key date: "
            "the day the order is shown in the calendar.\n"
            "Moving an order in the calendar sets its planning date."),
        'get_calendar_date', setter='set_calendar_date',
        searcher='search_calendar_date')
    calendar_color = fields.Function(
        fields.Char("Calendar Color"), 'get_calendar_color')
    execution_date = fields.Date(
        "Execution Date",
        states={
            'readonly': Eval('state').in_(['done', 'cancelled']),
            },
        help="The day the order was carried out.")
    notes = fields.Text("Notes", states=_states)
    planned_by = employee_field(
        "Planned By", states=['planned', 'done', 'cancelled'])
    done_by = employee_field("Done By", states=['done'])
    state = fields.Selection([
            ('draft', "Draft"),
            ('planned', "Planned"),
            ('done', "Done"),
            ('cancelled', "Cancelled"),
            ], "State", readonly=True, required=True, sort=False,
        help="The current state of the dispatch order.")

    del _states

    @classmethod
    def __setup__(cls):
        cls.number.search_unaccented = False
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.update({
                Index(t, (t.number, Index.Similarity())),
                Index(t, (t.contract, Index.Range()), (t.key_date, Index.Range())),
                Index(
                    t, (t.state, Index.Equality(cardinality='low')),
                    where=t.state.in_(['draft', 'planned'])),
                })
        cls._order = [
            ('planning_date', 'DESC NULLS FIRST'),
            ('key_date', 'DESC NULLS FIRST'),
            ('id', 'DESC'),
            ]
        cls._transitions |= {
            ('draft', 'planned'),
            ('planned', 'done'),
            ('draft', 'cancelled'),
            ('planned', 'cancelled'),
            ('planned', 'draft'),
            ('cancelled', 'draft'),
            # Reopened to correct what was recorded
            ('done', 'draft'),
            ('done', 'cancelled'),
            }
        cls._buttons.update({
                'draft': {
                    'invisible': ~Eval('state').in_(
                        ['planned', 'done', 'cancelled']),
                    'icon': If(Eval('state') == 'cancelled',
                        'tryton-undo', 'tryton-back'),
                    'depends': ['state'],
                    },
                'plan': {
                    'invisible': Eval('state') != 'draft',
                    'icon': 'tryton-forward',
                    'depends': ['state'],
                    },
                'do': {
                    'invisible': Eval('state') != 'planned',
                    'icon': 'tryton-ok',
                    'depends': ['state'],
                    },
                'cancel': {
                    'invisible': ~Eval('state').in_(
                        ['draft', 'planned', 'done']),
                    'icon': 'tryton-cancel',
                    'depends': ['state'],
                    },
                })

    @classmethod
    def default_company(cls):
        return Transaction().context.get('company')

    @classmethod
    def default_state(cls):
        return 'draft'

    @fields.depends(
        'contract', '_parent_contract.party', '_parent_contract.company',
        '_parent_contract.contact', '_parent_contract.description',
        '_parent_contract.service_address')
    def on_change_contract(self):
        if self.contract:
            self.company = self.contract.company
            self.party = self.contract.party
            self.service_address = self.contract.get_service_address()
            self.contact = self.contract.contact
            self.description = self.contract.description

    @fields.depends('party', 'service_address')
    def on_change_party(self):
        if self.party:
            if (not self.service_address
                    or self.service_address.party != self.party):
                self.service_address = self.party.address_get(
                    type='delivery')
        else:
            self.service_address = None

    def get_rec_name(self, name):
        items = [self.number or str(self.id)]
        if self.party:
            items.append(self.party.rec_name)
        return ' - '.join(items)

    @classmethod
    def search_rec_name(cls, name, clause):
        _, operator, value = clause
        if operator.startswith('!') or operator.startswith('not '):
            bool_op = 'AND'
        else:
            bool_op = 'OR'
        return [bool_op,
            ('number', operator, value),
            ('party.rec_name', operator, value),
            ('description', operator, value),
            ]

    def get_calendar_date(self, name):
        return self.planning_date or self.key_date

    @classmethod
    def set_calendar_date(cls, orders, name, value):
        cls.write(orders, {'planning_date': value})

    @classmethod
    def search_calendar_date(cls, name, clause):
        _, operator, value = clause[:3]
        if value is None and operator in {'=', '!='}:
            return [
                'AND' if operator == '=' else 'OR',
                ('planning_date', operator, None),
                ('key_date', operator, None),
                ]
        return ['OR',
            ('planning_date', operator, value),
            [
                ('planning_date', '=', None),
                ('key_date', operator, value),
                ],
            ]

    def get_calendar_color(self, name):
        "Return the background of the order in the calendar"
        if self.state == 'draft' and not self.planning_date:
            return CALENDAR_COLORS['to_plan']
        return CALENDAR_COLORS.get(self.state, CALENDAR_COLORS['draft'])

    @classmethod
    def view_attributes(cls):
        return super().view_attributes() + [
            ('/tree', 'visual',
                If(Eval('state') == 'cancelled', 'muted', '')),
            ]

    @classmethod
    def preprocess_values(cls, mode, values):
        values = super().preprocess_values(mode, values)
        if mode == 'create' and not values.get('number'):
            values['number'] = cls._new_number(
                values.get('company', cls.default_company()))
        return values

    @classmethod
    def _get_number_sequence(cls, company_id):
        """Return the sequence of the dispatch order numbers of the company

        A configuration saved before the module was activated has no
        sequence: the default one is used."""
        pool = Pool()
        Configuration = pool.get('sale.configuration')
        ConfigurationSequence = pool.get('sale.configuration.sequence')
        Sequence = pool.get('ir.sequence')
        sequence = Configuration(1).get_multivalue(
            'dispatch_order_sequence', company=company_id)
        if not sequence:
            default = ConfigurationSequence.default_dispatch_order_sequence()
            if default is None:
                raise DispatchOrderError(gettext(
                        'dispatch_order.msg_order_no_sequence'))
            sequence = Sequence(default)
        return sequence

    @classmethod
    def _new_number(cls, company_id):
        return cls._get_number_sequence(company_id).get()

    @classmethod
    def set_number(cls, orders):
        "Give a number to the orders without one, one query per company"
        orders = [o for o in orders if not getattr(o, 'number', None)]
        orders.sort(key=lambda o: o.company.id)
        for company, c_orders in groupby(orders, key=lambda o: o.company):
            c_orders = list(c_orders)
            sequence = cls._get_number_sequence(company.id)
            for order, number in zip(
                    c_orders, sequence.get_many(len(c_orders))):
                order.number = number

    @classmethod
    def copy(cls, orders, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('number', None)
        default.setdefault('key_date', None)
        default.setdefault('planning_date', None)
        default.setdefault('execution_date', None)
        default.setdefault('planned_by', None)
        default.setdefault('done_by', None)
        return super().copy(orders, default=default)

    @classmethod
    def validate_fields(cls, orders, field_names):
        super().validate_fields(orders, field_names)
        cls.check_dates(orders, field_names)

    @classmethod
    def check_dates(cls, orders, field_names=None):
        if field_names and not (field_names & {
                    'state', 'planning_date', 'execution_date'}):
            return
        for order in orders:
            if order.state in {'planned', 'done'} and not order.planning_date:
                raise DispatchOrderValidationError(gettext(
                        'dispatch_order.msg_order_planning_date_required',
                        order=order.rec_name))
            if order.state == 'done' and not order.execution_date:
                raise DispatchOrderValidationError(gettext(
                        'dispatch_order.msg_order_execution_date_required',
                        order=order.rec_name))

    @classmethod
    def check_modification(cls, mode, orders, values=None, external=False):
        super().check_modification(
            mode, orders, values=values, external=external)
        if mode == 'delete':
            for order in orders:
                if order.state not in {'draft', 'cancelled'}:
                    raise DispatchOrderError(gettext(
                            'dispatch_order.msg_order_delete_state',
                            order=order.rec_name))

    @classmethod
    @ModelView.button
    @Workflow.transition('draft')
    def draft(cls, orders):
        cls.write(orders, {
                # with the state: a done order needs its execution date
                'state': 'draft',
                'planned_by': None,
                'done_by': None,
                'execution_date': None,
                })

    @classmethod
    @ModelView.button
    @Workflow.transition('planned')
    def plan(cls, orders):
        pool = Pool()
        User = pool.get('res.user')
        for order in orders:
            if not order.planning_date:
                raise DispatchOrderError(gettext(
                        'dispatch_order.msg_order_plan_no_date',
                        order=order.rec_name))
        employee = User(Transaction().user).employee
        cls.write(orders, {'planned_by': employee.id if employee else None})

    @classmethod
    @ModelView.button
    @Workflow.transition('done')
    def do(cls, orders):
        pool = Pool()
        Date = pool.get('ir.date')
        User = pool.get('res.user')
        employee = User(Transaction().user).employee
        for order in orders:
            if not order.execution_date:
                with Transaction().set_context(company=order.company.id):
                    order.execution_date = Date.today()
            order.done_by = employee
        cls.save(orders)

    @classmethod
    @ModelView.button
    @Workflow.transition('cancelled')
    def cancel(cls, orders):
        pass


class LineMixin:
    """The work of a dispatch order line: a product, a quantity and a
    description (dispatch.order.line and sale.subscription.dispatch.line)"""
    __slots__ = ()

    product = fields.Many2One('product.product', "Product")
    quantity = fields.Float("Quantity", digits='unit')
    unit = fields.Many2One(
        'product.uom', "Unit",
        domain=[
            If(Bool(Eval('product_uom_category')),
                ('category', '=', Eval('product_uom_category', -1)),
                ()),
            ],
        states={
            'required': Bool(Eval('quantity')),
            })
    product_uom_category = fields.Function(
        fields.Many2One('product.uom.category', "Product UoM Category"),
        'on_change_with_product_uom_category')
    description = fields.Text("Description")

    @classmethod
    def default_quantity(cls):
        return 1

    @fields.depends('product')
    def on_change_with_product_uom_category(self, name=None):
        return self.product.default_uom_category if self.product else None

    @fields.depends('product', 'unit', 'description')
    def on_change_product(self):
        if self.product:
            category = self.product.default_uom.category
            if not self.unit or self.unit.category != category:
                self.unit = self.product.default_uom
            if not self.description:
                self.description = self.product.name


class OrderLine(sequence_ordered(), LineMixin, ModelSQL, ModelView):
    __name__ = 'dispatch.order.line'

    order = fields.Many2One(
        'dispatch.order', "Order", required=True, ondelete='CASCADE')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.__access__.add('order')
        cls.product.context = {
            'company': Eval('_parent_order', {}).get('company', -1),
            }
        cls.product.depends = {'order'}

    def get_rec_name(self, name):
        if self.product:
            return self.product.rec_name
        return (self.description or '').split('\n')[0]


class OrderReport(CompanyReport):
    __name__ = 'dispatch.order'
