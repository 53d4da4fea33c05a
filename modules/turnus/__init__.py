# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Code shared by the Turnus modules

It is not a Tryton module: recurring_invoice and dispatch_order each
register their own classes built on these mixins, so either module works
without the other."""
