# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
from trytond.exceptions import UserError, UserWarning
from trytond.model.exceptions import AccessError, ValidationError

from turnus.recurrence import SetupRecurrenceError  # noqa: F401


class ActivationError(ValidationError):
    pass


class RecurrenceLockedError(AccessError):
    pass


class AutomaticDeliveryError(ValidationError):
    pass


class AutomaticDeliveryWarning(UserWarning):
    pass


class RunConfirmWarning(UserWarning):
    pass


class DeliveryError(UserError):
    pass


class PDFConverterMissingError(UserError):
    pass


class PDFConversionError(UserError):
    pass


class PDFConverterConfigError(UserError):
    pass


class InvoiceRunError(UserError):
    pass


class InvoiceRunValidationError(ValidationError):
    pass


class PlanInvoicesError(UserError):
    pass


class InvoiceMergeError(UserError):
    pass


class SendDateWarning(UserWarning):
    pass


class DatevError(UserError):
    pass


class DatevValidationError(ValidationError):
    pass


class DocumentStoreError(UserError):
    pass


class DocumentStoreValidationError(ValidationError):
    pass


class AdditionalInvoiceError(UserError):
    pass


class DispatchInvoiceError(UserError):
    pass


class DirectDebitError(UserError):
    pass


class EinvoiceError(UserError):
    pass


class EinvoiceValidationError(ValidationError):
    pass


class LifecycleValidationError(ValidationError):
    pass


class TerminationError(UserError):
    pass


class TerminationWarning(UserWarning):
    pass


class PauseError(UserError):
    pass


class PauseValidationError(ValidationError):
    pass


class PriceRevisionError(UserError):
    pass


class PriceRevisionValidationError(ValidationError):
    pass


class PriceRevisionWarning(UserWarning):
    pass
