# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.exceptions import UserError
from trytond.model.exceptions import AccessError, ValidationError

from turnus.recurrence import SetupRecurrenceError  # noqa: F401


class DispatchOrderError(UserError):
    pass


class DispatchOrderValidationError(ValidationError):
    pass


class DispatchSettingsError(ValidationError):
    pass


class DispatchLockedError(AccessError):
    pass
