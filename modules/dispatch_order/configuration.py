# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.model import fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval, Id


class Configuration(metaclass=PoolMeta):
    __name__ = 'sale.configuration'

    dispatch_order_sequence = fields.MultiValue(fields.Many2One(
            'ir.sequence', "Dispatch Order Sequence", required=True,
            domain=[
                ('company', 'in',
                    [Eval('context', {}).get('company', -1), None]),
                ('sequence_type', '=',
                    Id('dispatch_order', 'sequence_type_dispatch_order')),
                ]))

    @classmethod
    def multivalue_model(cls, field):
        pool = Pool()
        if field == 'dispatch_order_sequence':
            return pool.get('sale.configuration.sequence')
        return super().multivalue_model(field)

    @classmethod
    def default_dispatch_order_sequence(cls, **pattern):
        return cls.multivalue_model(
            'dispatch_order_sequence').default_dispatch_order_sequence()


class ConfigurationSequence(metaclass=PoolMeta):
    __name__ = 'sale.configuration.sequence'
    dispatch_order_sequence = fields.Many2One(
        'ir.sequence', "Dispatch Order Sequence", required=True,
        domain=[
            ('company', 'in', [Eval('company', -1), None]),
            ('sequence_type', '=',
                Id('dispatch_order', 'sequence_type_dispatch_order')),
            ])

    @classmethod
    def default_dispatch_order_sequence(cls):
        pool = Pool()
        ModelData = pool.get('ir.model.data')
        try:
            return ModelData.get_id(
                'dispatch_order', 'sequence_dispatch_order')
        except KeyError:
            return None
