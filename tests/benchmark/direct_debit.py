# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Benchmark of the night with the SEPA direct-debit channel (not a test).

N contracts of the flavour ``direct_debit`` (contracts.py:
account_payment_sepa activated, a SEPA payment journal as the sale
configuration's direct-debit journal, a validated mandate per customer)
whose standard delivery has the channels of ``--channels`` (default
``direct_debit``; ``email,direct_debit`` mails the PDFs to the harness's
SMTP sink too).  The night is ``generate_recurring_invoices(D)`` in a cold
child without queue workers, as in the delivery benchmark: it generates,
posts and, per delivery slice, prepares a draft ``account.payment`` per
invoice with the customer's mandate (``RunLine.deliver_direct_debit``);
at the end of the run ``Run.group_direct_debits`` puts them in one
``account.payment.group``.  Checked: every invoice posted and collected
by exactly one draft payment (amount, mandate, journal, its line to pay),
the run has one group with all the payments; a second night for the same
date adds nothing.

Then, in the same child, the night's payments and groups deleted
(committed, not timed), each path in its own transaction, rolled back
after: Turnus' channel again
(``deliver_direct_debit`` on the run's lines + ``group_direct_debits``)
and core's way for the same posted invoices: ``account.move.line``
``pay_direct_debit()`` with a ``party.party.reception_direct_debit`` per
customer (same journal, the mandate; created before, not timed).  Both
then go on to the SEPA message as staff would: Turnus' group button
``process_payments``; core's ``Payment.submit`` and the wizard
``account.payment.process`` (which makes the group).  The order is
Turnus, core, core, Turnus (core first in the second, fourth... run).  Section
"Direct debit" of doc/benchmark.md::

    python -m tests.benchmark.direct_debit [--sizes 200] [--backend both]
        [--channels direct_debit] [--channels email,direct_debit]
        [--repeat 3]
"""
import datetime as dt
import sys
import time
from collections import Counter, defaultdict

from . import contracts
from . import harness as h
from .nightly import BEFORE, OUTPUT, TITLE

HEADING = "## Direct debit"
DISTRIBUTIONS = ['trytond', 'trytond_sale_subscription',
    'trytond_account_invoice', 'trytond_account_payment',
    'trytond_account_payment_sepa', 'trytond_bank', 'python-stdnum',
    'proteus', 'python-sql']
PATHS = {
    'turnus': "Turnus `deliver_direct_debit` + `group_direct_debits`",
    'core': "core `pay_direct_debit`",
    }
PROCESS = {
    'turnus': "+ `process_payments` of the group",
    'core': "+ `submit` + wizard `account.payment.process`",
    }


def payment_state(pool, date=None):
    """The direct debits in the database: payments per invoice, their
    problems, groups and their sizes"""
    Invoice = pool.get('account.invoice')
    Payment = pool.get('account.payment')
    Group = pool.get('account.payment.group')
    Configuration = pool.get('sale.configuration')
    invoices = Invoice.search(
        [('subscription', '!=', None)], order=[('id', 'ASC')])
    journal = Configuration(1).get_multivalue('direct_debit_journal')
    payments = Payment.search([], order=[('id', 'ASC')])
    by_invoice, problems = defaultdict(list), Counter()
    line_ids = {l.id: i for i in invoices for l in i.lines_to_pay}
    for payment in payments:
        invoice = line_ids.get(payment.line.id if payment.line else None)
        if not invoice:
            problems["payments of no invoice's line to pay"] += 1
            continue
        by_invoice[invoice.id].append(payment)
        mandate = payment.sepa_mandate
        if payment.amount != invoice.total_amount:
            problems["payments of another amount"] += 1
        if payment.journal != journal:
            problems["payments on another journal"] += 1
        if (payment.party != invoice.party or not mandate
                or mandate.party != invoice.party
                or mandate.identification != (
                    contracts.mandate_identification(
                        int(invoice.party.name.split()[-1])))):
            problems["payments without the customer's mandate"] += 1
        if payment.kind != 'receivable':
            problems["payments not receivable"] += 1
        if date and payment.date != date:
            problems[f"payments not dated {date}"] += 1
    groups = Group.search([], order=[('id', 'ASC')])
    return {
        'invoices': len(invoices),
        'posted': sum(i.state == 'posted' for i in invoices),
        'payments': len(payments),
        'payment_states': dict(Counter(p.state for p in payments)),
        'invoices_with_one': sum(
            len(by_invoice[i.id]) == 1 for i in invoices),
        'invoices_with_more': sum(
            len(by_invoice[i.id]) > 1 for i in invoices),
        'notices': sum(bool(i.direct_debit_notice) for i in invoices),
        'problems': dict(problems),
        'groups': [len(g.payments) for g in groups],
        'grouped': sum(bool(p.group) for p in payments),
        'total': float(sum(i.total_amount for i in invoices)),
        }


def payment_problems(state, n, payment_state='draft', grouped=True):
    """What is wrong with the direct debits of n invoices: one payment
    each, in payment_state, all in one group if grouped, else in none"""
    expected = [
        ('invoices', state['invoices'], n),
        ('posted', state['posted'], n),
        ('invoices with the pre-notification', state['notices'], n),
        ('payments', state['payments'], n),
        (f'{payment_state} payments',
            state['payment_states'].get(payment_state, 0), n),
        ('invoices with exactly one payment', state['invoices_with_one'], n),
        ('payment groups', state['groups'], [n] if grouped else []),
        ('payments in a group', state['grouped'], n if grouped else 0),
        ]
    problems = [f"{label} {got}, expected {want}"
        for label, got, want in expected if got != want]
    problems += [f"{count} {text}" for text, count in
        state['problems'].items()]
    return problems


def night_state(pool, db, context):
    "What the night left: invoices, protocol lines, payments, e-mails"
    from trytond.transaction import Transaction
    with Transaction().start(db, 0, context=context, readonly=True):
        Date = pool.get('ir.date')
        Run = pool.get('account.invoice.run')
        Line = pool.get('account.invoice.run.line')
        state = payment_state(pool, Date.today())
        lines = Line.search([], order=[('id', 'ASC')])
        runs = Run.search([])
        state.update({
                'runs': len(runs),
                'run_groups': [len(r.payment_groups) for r in runs],
                'run_lines': dict(Counter(
                        f'{l.channel} {l.state}' for l in lines)),
                'lines_with_payment': sum(
                    bool(l.payment) for l in lines
                    if l.channel == 'direct_debit'),
                'failure_reasons': dict(Counter(
                        l.message for l in lines if l.state == 'failed')),
                'emails_logged': pool.get('ir.email').search_count([]),
                'invoice_errors': pool.get('sale.subscription'
                    ).search_count([('invoice_error', '!=', None)]),
                'expected_mails': h.expected_mails(pool.get(
                        'account.invoice').search(
                        [('subscription', '!=', None)])),
                })
        return state


def night_problems(state, n, channels):
    problems = payment_problems(state, n)
    expected = [
        ('runs', state['runs'], 1),
        ('contracts with an invoicing error', state['invoice_errors'], 0),
        ('payment groups of the run', state['run_groups'], [1]),
        ('direct-debit lines with a payment', state['lines_with_payment'],
            n),
        ('e-mails logged', state['emails_logged'],
            n if 'email' in channels else 0),
        ]
    for channel in channels:
        done = 'done'
        expected.append((f'{channel} lines {done}',
                state['run_lines'].get(f'{channel} {done}', 0), n))
    expected.append(('protocol lines', sum(state['run_lines'].values()),
            n * len(channels)))
    problems += [f"{label} {got}, expected {want}"
        for label, got, want in expected if got != want]
    return problems


def sepa_message(pool):
    """The SEPA messages of the groups: their number, transactions and
    control sum"""
    from lxml import etree
    Message = pool.get('account.payment.sepa.message')
    messages = Message.search([])
    transactions, total = 0, 0.0
    for message in messages:
        data = message.message
        data = data.encode('utf-8') if isinstance(data, str) else bytes(data)
        xml = etree.fromstring(data)
        transactions += len(xml.xpath('//*[local-name()="DrctDbtTxInf"]'))
        total += sum(float(a.text) for a in xml.xpath(
                '//*[local-name()="DrctDbtTxInf"]'
                '/*[local-name()="InstdAmt"]'))
    return {'messages': len(messages), 'transactions': transactions,
        'total': total}


def compare(pool, db, context, order, counter):
    """Each path of order in its own transaction (rolled back): the
    night's payments and groups deleted, then the path timed, checked,
    then its processing to the SEPA message timed and checked"""
    from trytond.transaction import Transaction, TransactionError

    Date = pool.get('ir.date')
    Configuration = pool.get('sale.configuration')
    Group = pool.get('account.payment.group')
    Line = pool.get('account.invoice.run.line')
    Mandate = pool.get('account.payment.sepa.mandate')
    MoveLine = pool.get('account.move.line')
    Payment = pool.get('account.payment')
    Reception = pool.get('party.party.reception_direct_debit')
    Run = pool.get('account.invoice.run')

    def clear():
        "Delete what the night prepared, as if it had not collected"
        lines = Line.search([('channel', '=', 'direct_debit')])
        Line.write(lines, {'payment': None, 'state': 'pending',
                'recipient': None})
        Payment.delete(Payment.search([]))
        Group.delete(Group.search([]))
        return lines

    def turnus(lines):
        # As the night calls it: per delivery slice
        size = getattr(sys.modules[Line.deliver.__module__],
            'DELIVERY_BATCH_SIZE', 50)
        for offset in range(0, len(lines), size):
            Line.deliver_direct_debit(lines[offset:offset + size])
        Line.save(lines)
        Run.group_direct_debits(list({l.run for l in lines}))

    def turnus_process():
        groups = Group.search([])
        Group.process_payments(groups)

    def core(lines):
        MoveLine.pay_direct_debit(date=Date.today())

    def core_process():
        payments = Payment.search([('state', '=', 'draft')])
        with Transaction().set_context(_skip_warnings=True):
            Payment.submit(payments)
        h.run_wizard(pool, 'account.payment.process',
            [p.id for p in payments], {}, button='process',
            model='account.payment')

    paths = {'turnus': (turnus, turnus_process),
        'core': (core, core_process)}
    results = []
    for name in order:
        prepare, process = paths[name]
        result = {'path': name}
        with Transaction().start(db, 0, context=context) as transaction:
            lines = clear()
            n = len(lines)
            Reception.delete(Reception.search([]))
            if name == 'core':
                # Core's configuration: a direct debit per customer
                journal = Configuration(1).get_multivalue(
                    'direct_debit_journal')
                values = [{
                        'party': m.party.id,
                        'journal': journal.id,
                        'type': 'line',
                        'sepa_mandate': m.id,
                        } for m in Mandate.search([])]
                for offset in range(0, len(values), 50):
                    Reception.create(values[offset:offset + 50])
            transaction.commit()
            lines = [l.id for l in lines]
        # The path in a transaction of its own, with empty caches,
        # committed as the night commits its slices
        with Transaction().start(db, 0, context=context) as transaction:
            lines = Line.browse(lines)
            prepare_result = {}
            with h.measured(prepare_result, counter):
                prepare(lines)
                transaction.commit()
            result['prepare'] = prepare_result
        with Transaction().start(db, 0, context=context, readonly=True):
            state = payment_state(pool, Date.today())
            # Core groups in its processing only
            result['problems'] = [f"{name}: {p}" for p in payment_problems(
                    state, n, grouped=name == 'turnus')]
        # Staff's request, started again with the locks it asks for as
        # trytond's dispatcher does, rolled back (the payments stay draft)
        process_result, extras, attempts = {}, {}, 0
        with h.measured(process_result, counter):
            while True:
                attempts += 1
                transaction = Transaction().start(
                    db, 0, context=context, **extras)
                try:
                    process()
                except TransactionError as exception:
                    transaction.stop()
                    exception.fix(extras)
                    continue
                except Exception:
                    transaction.stop()
                    raise
                break
        try:
            process_result['attempts'] = attempts
            result['process'] = process_result
            state = payment_state(pool)
            message = result['message'] = sepa_message(pool)
            problems = payment_problems(state, n, 'processing')
            if message['messages'] != 1 or message['transactions'] != n:
                problems.append(f"{message['messages']} SEPA messages with "
                    f"{message['transactions']} transactions, expected 1 "
                    f"with {n}")
            if abs(message['total'] - state['total']) > 0.005:
                problems.append(f"SEPA message total {message['total']}, "
                    f"expected {state['total']}")
            result['problems'] += [f"{name} processed: {p}"
                for p in problems]
        finally:
            transaction.stop()
        results.append(result)
    return results


def measure(spec):
    """Time the night for spec['date'] with the channels of the contracts,
    check it and a second night; then compare Turnus' and core's direct
    debits of the same posted invoices"""
    from trytond.transaction import Transaction

    db, n = spec['db'], spec['n']
    channels = spec['channels']
    date = dt.date.fromisoformat(spec['date'])
    pool, context = h.worker_pool(spec)
    Subscription = pool.get('sale.subscription')
    counter = h.QueryCounter()
    timers = h.Timers()
    timers.wrap(Subscription, 'deliver_recurring_invoices', 'delivery')
    timers.wrap(pool.get('account.invoice'), 'post', 'post')
    timers.wrap(pool.get('account.invoice.run.line'),
        'deliver_direct_debit', 'direct_debit')
    timers.wrap(pool.get('account.invoice.run'), 'group_direct_debits',
        'group')
    if 'email' in channels:
        timers.wrap_delivery(pool)

    def night():
        "Like ir.cron: the method in a transaction, then the queued tasks"
        result = {}
        with h.measured(result, counter, timers):
            result['error'] = h.call_in_transaction(
                db, context, Subscription.generate_recurring_invoices, date)
            start = time.perf_counter()
            # Core's print_invoice queued at posting (about 0.2 s per
            # invoice: in the first run only)
            if spec.get('tasks', True):
                result['tasks'] = h.run_queued_tasks(db)
            else:
                result['tasks'] = None
                Transaction().tasks.clear()
            result['tasks_seconds'] = time.perf_counter() - start
        result['seconds'] -= result['tasks_seconds']
        return result

    rss_before = h.rss_kib()
    result = {'first': night(), 'rss_before_kib': rss_before,
        'maxrss_kib': h.maxrss_kib()}
    state_context = dict(context, date=date)
    state1 = result['after_first'] = night_state(pool, db, state_context)
    problems = result['problems'] = night_problems(state1, n, channels)
    if result['first']['error']:
        problems.insert(0, "night raised " + result['first']['error']['type'])
    result['second'] = night()
    state2 = night_state(pool, db, state_context)
    state2.pop('expected_mails')
    for key in ['invoices', 'payments', 'groups', 'runs', 'run_lines',
            'emails_logged']:
        if state2[key] != state1[key]:
            problems.append(f"second night changed {key}: {state1[key]} → "
                f"{state2[key]}")
    if not problems and spec.get('compare', True):
        order = (['core', 'turnus', 'turnus', 'core'] if spec.get('odd')
            else ['turnus', 'core', 'core', 'turnus'])
        result['compare'] = compare(pool, db, context, order, counter)
        for path in result['compare']:
            problems.extend(path['problems'])
    return result


def check_mails(result, sink, n, channels):
    "The driver's check of the mails the sink received"
    messages = sink.take()
    expected = result['after_first'].pop('expected_mails', {})
    want = n if 'email' in channels else 0
    first = h.mails_in(messages, result['first'])
    if want:
        checked = h.check_mails(first, expected)
        result['problems'].extend(checked['problems'])
    result['mails'] = {'first': len(first), 'total': len(messages)}
    if len(first) != want:
        result['problems'].append(f"{len(first)} mails, expected {want}")
    if len(messages) != len(first):
        result['problems'].append(
            f"{len(messages) - len(first)} mails outside the first night")


def run_backend(options, backend):
    "Build the template, then fill and measure a database per variant"
    measurements = []
    date = contracts.due_date().isoformat()
    template_spec = {'db': backend.db_name('tpl', 'direct_debit'),
        'flavour': 'direct_debit', 'date': date}
    backend.build(contracts.template, template_spec, options.timeout * 2)
    with h.MailSink() as sink:
        for channels in options.channels:
            for n in options.sizes:
                db = backend.db_name('dd', len(channels), n)
                pop = backend.build(contracts.populate, dict(template_spec,
                        db=db, n=n, channels=channels), options.timeout * 2,
                    copy_of=template_spec['db'])
                spec = {'db': db, 'n': n, 'date': date,
                    'channels': channels, 'settings': sink.settings}
                sink.take()
                runs = []
                for index in range(options.repeat):
                    # Core's path first in the odd runs
                    runs += h.repeat_runs(measure, backend, dict(spec,
                            odd=bool(index % 2), tasks=not index), db, 1,
                        options.timeout,
                        lambda r: check_mails(r, sink, n, channels),
                        f"{'+'.join(channels)} N={n} #{index + 1}")
                    if not runs[-1]['ok']:
                        break
                backend.drop(db)
                measurements.append({'backend': backend.name, 'n': n,
                        'channels': channels, 'populate': pop['seconds'],
                        'runs': runs, 'result': h.representative(runs)})
    return measurements


def _samples(measurement, path, step):
    "The seconds and queries of path's step in every comparison of the runs"
    return [(p[step]['seconds'], p[step].get('queries'))
        for run in measurement['runs'] for p in run.get('compare') or []
        if p['path'] == path]


def _spread(samples):
    "The range of the seconds of samples"
    return h.spread([s for s, _ in samples]).replace(' runs)', ' samples)')


def _channels(m):
    return ' + '.join(m['channels'])


def section(session, machine, measurements):
    "The lines of the section about the night with direct debits"
    lines = [HEADING, ""] + h.run_header(session)
    add = lines.append
    extra = ([h.soffice_version()] if any(
            'email' in m['channels'] for m in measurements) else [])
    add(h.machine_line(machine, *extra))
    add("")
    add(f"N monthly contracts as in the sections above, all due on "
        f"{contracts.due_date()}, with account_payment_sepa activated: a "
        "euro company with its creditor identifier and bank account, a "
        "SEPA payment journal (pain.008.001.02) as the sale configuration's "
        "direct-debit journal, and per customer a bank account with a "
        "German IBAN and a validated recurrent mandate (created in bulk "
        "through the pool). Each contract has its own standard delivery "
        "(post, the channels of the table), automatic delivery on. The "
        "night is `sale.subscription.generate_recurring_invoices(D)` in a "
        "transaction, as `ir.cron` runs it, in a fresh process without "
        "queue workers: it generates, posts (the pre-notification goes "
        "into the invoice's comment), prepares per delivery slice one "
        "draft `account.payment` per invoice with the customer's mandate "
        "(`RunLine.deliver_direct_debit`) and at the end of the run puts "
        "them into one `account.payment.group` "
        "(`Run.group_direct_debits`); with e-mail it also renders and mails "
        "the PDFs to the aiosmtpd sink. Core's `print_invoice` tasks queued "
        "at posting run afterwards in the first run only and are timed "
        "separately (not part of the night's time). Checked after "
        "the night: every invoice posted with the pre-notification, every "
        "protocol line done, exactly one draft payment per invoice (its "
        "line to pay, its total, the customer's mandate, the journal, "
        "dated today), the run has one group with all N payments (and N "
        "mails with the stored PDFs with e-mail); a second night for the "
        "same date adds no payment, group, line or mail. Median of the "
        "runs, each on a fresh copy of the filled database.")
    add("")
    rows, done = [], []
    for m in measurements:
        r = m['result']
        if 'first' not in r:
            rows.append([m['backend'], _channels(m), m['n'], "**" + (
                        f"timeout (> {r['timeout']} s)" if 'timeout' in r
                        else 'crashed') + "**"])
            continue
        first = r['first']
        night = first['seconds']
        t = first['timers']['seconds']
        delivery = t.get('delivery', 0)
        direct = t.get('direct_debit', 0) + t.get('group', 0)
        tasks = m['runs'][0].get('first', {})
        tasks = (f"{tasks['tasks_seconds']:.2f} "
            f"({h.plural(tasks['tasks'], 'task')})"
            if tasks.get('tasks') is not None else '')
        rows.append([m['backend'], _channels(m), m['n'], h.status(r, 5),
                f"{night:.2f}", h.spread([run['first']['seconds']
                        for run in m['runs'] if 'first' in run]),
                f"{m['n'] / night:.1f}", f"{night - delivery:.2f}",
                f"{t.get('post', 0):.2f}", f"{direct:.2f}",
                f"{t.get('group', 0):.2f}", tasks,
                f"{first['cpu_seconds']:.2f}", first.get('queries', ''),
                f"{h.mib(r['maxrss_kib']):.0f}",
                f"{r['second']['seconds']:.2f}"])
        done.append((m, r))
    lines += h.table(["Backend", "Channels", "N", "Result", "Night (s)",
            "Range (s)", "Invoices/s", "Generation (s)", "Posting (s)",
            "Direct debits (s)", "of which grouping (s)",
            "Queued tasks (s)", "CPU (s)", "Queries", "Peak RSS (MiB)",
            "2nd night (s)"], rows, 'llrlrrrrrrrrrrrr')
    add("")
    add("'Direct debits' is the time in `deliver_direct_debit` and "
        "`group_direct_debits` during the night (wall time, measured by "
        "wrapping the methods in the benchmark process).")
    add("")
    add("The same direct debits again in the same process after the "
        "nights, Turnus' way and core's way for the same posted invoices: "
        "the night's payments and groups deleted (committed, not timed), "
        "each path in a transaction of its own, rolled back afterwards, "
        "twice per run in the order Turnus, core, core, Turnus (core "
        "first in the even-numbered runs). Turnus: "
        "`RunLine.deliver_direct_debit` on the run's direct-debit lines "
        "(per delivery slice, as in the night), saving them and "
        "`Run.group_direct_debits` (one group). Core: a "
        "`party.party.reception_direct_debit` per customer (type line, the "
        "same journal, the mandate; created before, not timed), then "
        "`account.move.line.pay_direct_debit()` (one draft payment per "
        "due line, no group: core groups when it processes). Both then to "
        "the SEPA message as staff would: Turnus the group's button "
        "`process_payments` (submits and processes the group), core "
        "`Payment.submit` and the wizard `account.payment.process` (one "
        "group per company, journal and kind, processed). Checked for "
        "each path: N payments, one per invoice with its total and the "
        "customer's mandate, one group with all of them after processing "
        "(Turnus already before), one pain.008 message with N "
        "transactions whose amounts sum to the invoices' total. Median of "
        "all the samples (2 per run and path):")
    add("")
    rows = []
    for m, r in done:
        medians = {}
        for path in ['turnus', 'core']:
            prepare = _samples(m, path, 'prepare')
            process = _samples(m, path, 'process')
            if not prepare:
                continue
            both = list(zip(prepare, process))
            whole = [a[0] + b[0] for a, b in both]
            medians[path] = (h.median([s for s, _ in prepare]),
                h.median(whole))
            ratio = ['', '']
            if path == 'core' and 'turnus' in medians:
                ratio = [f"{medians['core'][i] / medians['turnus'][i]:.1f}×"
                    for i in range(2)]
            rows.append([m['backend'], _channels(m), m['n'],
                    f"{PATHS[path]} {PROCESS[path]}",
                    f"{medians[path][0]:.2f}", _spread(prepare),
                    f"{h.median([q for _, q in prepare]):.0f}",
                    f"{medians[path][1]:.2f}",
                    _spread([(w, None) for w in whole]),
                    f"{h.median([a[1] + b[1] for a, b in both]):.0f}",
                    *ratio])
    lines += h.table(["Backend", "Channels", "N", "Path",
            "Payments (s)", "Range (s)", "Queries",
            "Payments to the SEPA message (s)", "Range (s)", "Queries",
            "Core / Turnus (payments)", "Core / Turnus (to the message)"],
        rows, 'llrlrrrrrrrr')
    add("")
    for m, r in done:
        t = r['first']['timers']['seconds']
        direct = t.get('direct_debit', 0) + t.get('group', 0)
        turnus = h.median([s for s, _ in _samples(m, 'turnus', 'prepare')])
        core = h.median([s for s, _ in _samples(m, 'core', 'prepare')])
        text = (f"- {m['backend']}, {_channels(m)}, N = {m['n']}: the night "
            f"{r['first']['seconds']:.1f} s, of which the direct debits "
            f"{direct:.2f} s ({direct / m['n'] * 1000:.1f} ms per "
            "invoice)")
        if turnus and core:
            text += (f"; again after the night Turnus {turnus:.2f} s, core's "
                f"`pay_direct_debit` {core:.2f} s (core / Turnus "
                f"{core / turnus:.1f}×)")
        add(text + ".")
    add("")
    lines += h.load_lines([run for m in measurements for run in m['runs']])
    for note in session.notes:
        lines += [note, ""]
    lines += [
        "Re-run only this section (it replaces itself in this file and "
        "keeps the rest):", "", "```",
        "python -m tests.benchmark.direct_debit --sizes 200 "
        "--backend sqlite",
        "TRYTOND_DATABASE_URI=postgresql://postgres@127.0.0.1:5432/ \\",
        "    python -m tests.benchmark.direct_debit --sizes 200 "
        "--backend both --channels direct_debit "
        "--channels email,direct_debit",
        "```", "",
        "`--channels` (repeatable, default `direct_debit`) sets the "
        "channels of the contracts' delivery, one database and table row "
        "per value; `--repeat` the number of runs (default 3).", ""]
    return lines


def main(argv=None):
    parser = h.arguments("Benchmark the night with SEPA direct debits",
        OUTPUT)
    parser.add_argument('--sizes', default='200',
        help="comma separated numbers of contracts (default: 200)")
    parser.add_argument('--channels', action='append',
        help="comma separated delivery channels of the contracts, "
        "repeatable: one variant each (default: direct_debit)")
    options = parser.parse_args(argv)
    options.sizes = [int(s) for s in options.sizes.split(',') if s.strip()]
    options.channels = [
        [c.strip() for c in value.split(',') if c.strip()]
        for value in options.channels or ['direct_debit']]
    for channels in options.channels:
        if 'direct_debit' not in channels or not set(channels) <= {
                'direct_debit', 'email'}:
            parser.error(f"--channels {','.join(channels)}: direct_debit "
                "and optionally email")
    with h.Session(options, prefix='bench_dd') as session:
        machine = h.machine_description(DISTRIBUTIONS, session.backends)
        measurements = [m for backend in session.backends
            for m in run_backend(options, backend)]
        session.notes.append(h.changed_note(machine))
    session.notes = list(filter(None, session.notes))
    h.update_section(options.output, section(session, machine, measurements),
        before=BEFORE, title=TITLE)
    session.write_json({'machine': machine, 'measurements': measurements})
    return int(not all(r.get('ok') for m in measurements
            for r in m['runs']))


if __name__ == '__main__':
    sys.exit(main())
