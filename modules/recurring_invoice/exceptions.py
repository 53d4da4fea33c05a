# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.exceptions import UserError
from trytond.model.exceptions import AccessError, ValidationError


class ActivationError(ValidationError):
    pass


class RecurrenceLockedError(AccessError):
    pass


class SetupRecurrenceError(UserError):
    pass
