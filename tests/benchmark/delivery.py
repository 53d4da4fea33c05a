# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Benchmark of the night with e-mail delivery, in the cron process (not a
test).

N contracts of the flavour ``delivery`` (contracts.py); the night is
``generate_recurring_invoices(D)`` in a cold child without queue workers:
it generates, posts, renders the PDFs with ``render_pdf_cache`` and mails
them through ``[email] uri`` to the harness's SMTP sink, which checks N
mails, one per invoice, each with the invoice's stored PDF, and none in a
second night.  The child times generation, posting, rendering (and
``soffice``), composing and SMTP by wrapping those methods.  After the
first run it renders the first ``--core-pdf`` invoices again as core does
(one ``InvoiceReport.execute`` per invoice, output PDF) and with
``render_pdf_cache``.  A last run has the converter down and must end
within ``--down-timeout`` with the lines failed and a reason.  It replaces
its section of doc/benchmark.md::

    python -m tests.benchmark.delivery [--sizes 200] [--backend both]
        [--repeat 3] [--core-pdf 30] [--down-timeout 120]
"""
import datetime as dt
import importlib.metadata
import sys
import time
from collections import defaultdict

from . import harness as h
from .contracts import due_date, filled
from .nightly import BEFORE, DISTRIBUTIONS, OUTPUT, TITLE

HEADING = "## Nightly run with e-mail delivery"
# Targets of the issue for 200 contracts on 2 cores
TARGET_RENDER_PER_INVOICE = 0.15
TARGET_NIGHT_200 = 60


def delivery_state(pool, db, context):
    "What the nightly runs left: invoices, protocol lines, e-mails"
    from trytond.transaction import Transaction
    with Transaction().start(db, 0, context=context, readonly=True):
        Invoice = pool.get('account.invoice')
        invoices = Invoice.search(
            [('subscription', '!=', None)], order=[('id', 'ASC')])
        lines = pool.get('account.invoice.run.line').search(
            [], order=[('id', 'ASC')])
        states, formats = defaultdict(int), defaultdict(int)
        for invoice in invoices:
            states[invoice.state] += 1
            formats[str(invoice.invoice_report_format)] += 1
        line_states, reasons = defaultdict(int), defaultdict(int)
        for line in lines:
            line_states[line.state] += 1
            if line.state == 'failed':
                reasons[line.message or ''] += 1
        return {
            'invoices': len(invoices),
            'invoice_states': dict(states),
            'report_formats': dict(formats),
            'numbers': sorted(i.number for i in invoices if i.number),
            'invoice_errors': pool.get('sale.subscription').search_count(
                [('invoice_error', '!=', None)]),
            'runs': pool.get('account.invoice.run').search_count([]),
            'run_lines': len(lines),
            'line_states': dict(line_states),
            'failure_reasons': dict(reasons),
            'emails_logged': pool.get('ir.email').search_count([]),
            'expected_mails': h.expected_mails(invoices),
            }


def state_problems(state, n, down=False):
    "What is wrong with the state after a night of n contracts"
    expected = [
        ('invoices', state['invoices'], n),
        ('contracts with an invoicing error', state['invoice_errors'], 0),
        ('posted', state['invoice_states'].get('posted', 0), n),
        ('runs', state['runs'], 1),
        ('protocol lines', state['run_lines'], n),
        ]
    if down:
        expected.append(
            ('lines failed', state['line_states'].get('failed', 0), n))
    else:
        expected += [
            ('lines done', state['line_states'].get('done', 0), n),
            ('PDF reports', state['report_formats'].get('pdf', 0), n),
            ('e-mails logged', state['emails_logged'], n),
            ]
    problems = [f"{label} {got}, expected {want}"
        for label, got, want in expected if got != want]
    if down and not all(state['failure_reasons']):
        problems.append("failed lines without a reason")
    return problems


def measure(spec):
    """Time the nightly run with e-mail delivery for spec['date'], check it
    and time a second run; then time core's rendering of the first
    spec['core_pdf'] invoices and render_pdf_cache's of the same"""
    db, n = spec['db'], spec['n']
    down = spec.get('converter_down', False)
    date = dt.date.fromisoformat(spec['date'])
    pool, context = h.worker_pool(spec)
    Subscription = pool.get('sale.subscription')
    RunLine = pool.get('account.invoice.run.line')
    counter = h.QueryCounter()
    invoice_run = sys.modules[RunLine.deliver.__module__]
    timers = h.Timers()
    timers.wrap(Subscription, 'deliver_recurring_invoices', 'delivery')
    timers.wrap(pool.get('account.invoice'), 'post', 'post')
    invoice_pdf = timers.wrap_delivery(pool)

    def night():
        "Like ir.cron: the method in a transaction, then the queued tasks"
        result = {}
        with h.measured(result, counter, timers):
            result['error'] = h.call_in_transaction(
                db, context, Subscription.generate_recurring_invoices, date)
            start = time.perf_counter()
            # Core's print_invoice queued at posting (finds the PDF stored)
            result['tasks'] = h.run_queued_tasks(db)
            result['tasks_seconds'] = time.perf_counter() - start
        result['seconds'] -= result['tasks_seconds']
        return result

    rss_before = h.rss_kib()
    result = {'first': night(), 'rss_before_kib': rss_before,
        'maxrss_kib': h.maxrss_kib(), 'batch_sizes': {
            'delivery': getattr(invoice_run, 'DELIVERY_BATCH_SIZE', None),
            'pdf': getattr(invoice_pdf, 'PDF_BATCH_SIZE', None)}}
    state_context = dict(context, date=date)
    state1 = result['after_first'] = delivery_state(pool, db, state_context)
    problems = result['problems'] = state_problems(state1, n, down)
    # Again for the same date: creates and sends nothing (it retries the
    # failed lines when the converter is down)
    result['second'] = night()
    state2 = result['after_second'] = delivery_state(
        pool, db, state_context)
    for step in ['first', 'second']:
        if result[step]['error']:
            problems.append(
                f"{step} run raised {result[step]['error']['type']}")
    for key in ['invoices', 'runs', 'run_lines', 'emails_logged',
            'line_states']:
        if state2[key] != state1[key]:
            problems.append(
                f"second run: {key} {state1[key]} -> {state2[key]}")
    state2.pop('expected_mails')
    if not down and spec.get('core_pdf') and not problems:
        result['render_compare'] = compare_rendering(
            pool, db, context, spec['core_pdf'], timers)
        problems.extend(result['render_compare'].pop('problems'))
    return result


def core_render(pool, ids):
    """Core's rendering of the invoices ids: InvoiceReport.execute per
    invoice with the report action's output format PDF (one soffice start
    each): the seconds of each and the problems"""
    InvoiceReport = pool.get('account.invoice', type='report')
    action = pool.get('ir.action.report')(pool.get('ir.model.data').get_id(
            'account_invoice', 'report_invoice'))
    action.extension = 'pdf'
    action.save()
    times, problems = [], []
    for id_ in ids:
        start = time.perf_counter()
        format_, content, _, _ = InvoiceReport.execute([id_], {})
        times.append(time.perf_counter() - start)
        if format_ != 'pdf' or not bytes(content).startswith(b'%PDF'):
            problems.append(
                f"core: invoice {id_} rendered as {format_}, not PDF")
            break
    return times, problems


def core_one_by_one(pool, db, context, ids, post=False):
    """Core's way for the invoices ids, as a user does it, one transaction
    each, the report action's output set to PDF: post (with the
    print_invoice it queues: render and one soffice start) if post, the
    report as PDF (one soffice start, from the cache if posted here), the
    mail with the module's template and ir.email.send, committed (SMTP):
    the seconds of each step per invoice and the problems"""
    from trytond.transaction import Transaction
    Invoice = pool.get('account.invoice')
    Template = pool.get('ir.email.template')
    with Transaction().start(db, 0, context=context) as transaction:
        template_id = pool.get('ir.model.data').get_id(
            'recurring_invoice', 'email_template_invoice')
        # The print_invoice queued at posting stores the PDF
        core_render(pool, [])
        transaction.commit()
    result = {'invoices': len(ids), 'post': [], 'render': [], 'mail': [],
        'problems': [], 'started_at': time.time()}
    for id_ in ids:
        if post:
            start = time.perf_counter()
            h.as_request(db, context,
                lambda: Invoice.post(Invoice.browse([id_])))
            h.run_queued_tasks(db)
            result['post'].append(time.perf_counter() - start)
        with Transaction().start(db, 0, context=context) as transaction:
            times, problems = core_render(pool, [id_])
            result['render'] += times
            result['problems'] += problems
            start = time.perf_counter()
            values = Template(template_id).get(Invoice(id_))
            pool.get('ir.email').send(to=', '.join(values.get('to', [])),
                subject=values.get('subject', ''),
                body=values.get('body', ''), record=(Invoice.__name__, id_),
                reports=values.get('reports'))
            transaction.commit()
            result['mail'].append(time.perf_counter() - start)
    result['ended_at'] = time.time()
    return result


def compare_rendering(pool, db, context, count, timers):
    """Render the PDF of the first count invoices of the night again, their
    cache emptied: by render_pdf_cache, then as core does.  Rolled back."""
    from trytond.transaction import Transaction

    Invoice = pool.get('account.invoice')
    InvoiceReport = pool.get('account.invoice', type='report')
    problems = []
    with Transaction().start(db, 0, context=context) as transaction:
        ids = [i.id for i in Invoice.search([
                    ('subscription', '!=', None),
                    ('state', '=', 'posted'),
                    ], order=[('id', 'ASC')], limit=count)]

        def clear():
            Invoice.write(Invoice.browse(ids), {
                    'invoice_report_cache': None,
                    'invoice_report_format': None,
                    })

        def check(label):
            bad = [i.id for i in Invoice.browse(ids)
                if i.invoice_report_format != 'pdf'
                or not (i.invoice_report_cache or b'').startswith(b'%PDF')]
            if bad:
                problems.append(f"{label}: {len(bad)} invoices without PDF")

        clear()
        timers.reset()
        start = time.perf_counter()
        InvoiceReport.render_pdf_cache(Invoice.browse(ids))
        result = {'invoices': len(ids),
            'batch_seconds': time.perf_counter() - start,
            'batch_soffice_seconds': timers.seconds.get('soffice', 0)}
        check("render_pdf_cache")
        clear()
        result['core_seconds'], core_problems = core_render(pool, ids)
        problems += core_problems
        check("core")
        transaction.rollback()
    result['problems'] = problems
    return result


def check_night_mails(result, sink, n, down=False):
    """The driver's checks of a night's result against the mails the sink
    received"""
    messages = sink.take()
    expected = {} if down else result['after_first'].pop('expected_mails')
    mails = result['mails'] = {
        'first': h.check_mails(h.mails_in(messages, result['first']),
            expected),
        'second': len(h.mails_in(messages, result['second']))}
    mails['outside'] = len(messages) - mails['first']['count'] - mails[
        'second']
    count = mails['first']['count']
    if count != (0 if down else n):
        result['problems'].append(f"{count} mails, expected "
            f"{0 if down else n}")
    if not down:
        result['problems'].extend(mails['first']['problems'])
    if mails['second']:
        result['problems'].append(f"second run sent {mails['second']} mails")
    if mails['outside']:
        result['problems'].append(f"{mails['outside']} mails outside the runs")


def run_backend(options, backend):
    "Build, fill and measure the delivery databases of a backend"
    measurements = []
    with h.MailSink() as sink:
        for n, (db, pop) in filled(backend, 'delivery', options.sizes,
                options.timeout * 2).items():
            spec = {'db': db, 'n': n, 'date': due_date().isoformat(),
                'settings': sink.settings}
            sink.take()
            runs = h.repeat_runs(measure, backend, dict(spec,
                    core_pdf=options.core_pdf), db, 1, options.timeout,
                lambda r: check_night_mails(r, sink, n), f"N={n}")
            if runs[0]['ok'] and options.repeat > 1:
                # Core's rendering after the first run only: ~1 s each
                runs += h.repeat_runs(measure, backend, spec, db,
                    options.repeat - 1, options.timeout,
                    lambda r: check_night_mails(r, sink, n), f"N={n}")
            down = h.repeat_runs(measure, backend, dict(spec,
                    converter_down=True, settings=sink.settings + [[
                            'recurring_invoice', 'soffice',
                            '/nonexistent/soffice']]),
                db, 1, options.down_timeout,
                lambda r: check_night_mails(r, sink, n, down=True),
                f"N={n} converter down")
            backend.drop(db)
            measurements.append({'backend': backend.name, 'n': n,
                    'populate': pop['seconds'], 'runs': runs, 'down': down,
                    'result': h.representative(runs)})
    return measurements


def _batch_size(measurements, kind):
    "The batch size of the module the runs measured ('?' if unknown)"
    sizes = {run.get('batch_sizes', {}).get(kind)
        for m in measurements for run in m['runs']}
    sizes.discard(None)
    return '/'.join(map(str, sorted(sizes))) or '?'


def section(session, machine, measurements):
    "The lines of the section about the nightly run with e-mail delivery"
    lines = [HEADING, ""] + h.run_header(session)
    add = lines.append
    add(f"Code: commit {machine['code']}. Same machine as above "
        f"({machine['cpu']}, {machine['cores']} cores); "
        f"{h.soffice_version()}, aiosmtpd "
        f"{importlib.metadata.version('aiosmtpd')}, "
        + ", ".join(f"{k} {v}" for k, v in machine['backends'].items())
        + ".")
    add("")
    add(f"N monthly contracts as above, all due on {due_date()}, each "
        "with its own standard delivery setting (post, channel e-mail, the "
        "module's template \"Invoice\"), automatic delivery on (company "
        "switch too) and a customer with an e-mail address; the template "
        "database also has a fiscal year with invoice sequences and "
        "periods. No queue worker is configured, so the cron process "
        "delivers itself. The night is one call of "
        "`sale.subscription.generate_recurring_invoices(D)` in a "
        "transaction, as `ir.cron` runs it, in a fresh process: it creates "
        "the invoices, then, in delivery slices of "
        f"{_batch_size(measurements, 'delivery')} lines (one transaction "
        "each), posts, renders the PDFs (`render_pdf_cache`, one `soffice` "
        "call per slice, at most "
        f"{_batch_size(measurements, 'pdf')} files per call) and e-mails "
        "them through "
        "trytond's `[email] uri` to an aiosmtpd sink on 127.0.0.1 run by "
        "the driver process. The queued tasks (core's `print_invoice`, "
        "which finds the PDF stored) run afterwards and are timed "
        "separately. The sink checks that the night sent exactly N mails, "
        "one per invoice, to the customer's address, each with one PDF "
        "attachment identical (SHA-256) to the invoice's stored report and "
        "readable by pypdf; a second night for the same date must send "
        "nothing and add no protocol line. Median of the runs, each on a "
        "fresh copy of the filled database.")
    add("")
    rows, done = [], []
    for m in measurements:
        r = m['result']
        if 'first' not in r:
            rows.append([m['backend'], m['n'], "**" + (
                        f"timeout (> {r['timeout']} s)" if 'timeout' in r
                        else 'crashed') + "**"])
            continue
        first = r['first']
        night = first['seconds']
        delivery = first['timers']['seconds'].get('delivery', 0)
        mails = r.get('mails', {})
        rows.append([m['backend'], m['n'], h.status(r, 5), f"{night:.2f}",
                h.spread([run['first']['seconds'] for run in m['runs']
                        if 'first' in run]),
                f"{m['n'] / night:.1f}", f"{night - delivery:.2f}",
                f"{delivery:.2f}", f"{first['tasks_seconds']:.2f} "
                f"({h.plural(first['tasks'], 'task')})",
                f"{first['cpu_seconds']:.2f}",
                f"{first['children_cpu_seconds']:.2f}",
                f"{h.mib(r['maxrss_kib']):.0f}",
                f"{mails.get('first', {}).get('count', '?')} / "
                f"{mails.get('second', '?')}",
                f"{r['second']['seconds']:.2f}"])
        done.append((m, r))
    lines += h.table(["Backend", "N", "Result", "Night (s)", "Range (s)",
            "Invoices/s", "Generation (s)", "Post + render + send (s)",
            "Queued tasks (s)", "CPU Python (s)", "CPU soffice (s)",
            "Peak RSS (MiB)", "Mails 1st / 2nd night", "2nd night (s)"],
        rows, 'lrlrrrrrrrrrlr')
    add("")
    add("Where the time of the night goes (same runs; wall time measured "
        "by wrapping the methods in the benchmark process):")
    add("")
    rows = []
    for m, r in done:
        t = r['first']['timers']['seconds']
        calls = r['first']['timers']['calls']
        render = t.get('render', 0)
        rest = (t.get('delivery', 0) - t.get('post', 0) - render
            - t.get('compose', 0) - t.get('smtp', 0))
        rows.append([m['backend'], m['n'], f"{t.get('post', 0):.2f}",
                f"{t.get('post', 0) / m['n']:.3f} "
                f"({h.plural(calls.get('post', 0), 'call')})",
                f"{render:.2f} ({h.plural(calls.get('render', 0), 'call')})",
                f"{t.get('soffice', 0):.2f} "
                f"({h.plural(calls.get('soffice', 0), 'start')})",
                f"{render / r['first']['seconds']:.0%}",
                f"{render / m['n']:.3f}", f"{t.get('compose', 0):.2f}",
                f"{t.get('smtp', 0):.2f}", f"{rest:.2f}"])
    lines += h.table(["Backend", "N", "Posting (s)", "Posting (s/invoice)",
            "Rendering `render_pdf_cache` (s)", "of which `soffice` (s)",
            "Rendering share of the night", "Rendering (s/invoice)",
            "Compose + `ir.email` (s)", "SMTP at commit (s)", "Rest (s)"],
        rows)
    add("")
    add("Rendering the same invoices in the same process after the first "
        "night, their report cache emptied (rolled back afterwards): "
        "`render_pdf_cache` on the first invoices at once, then core's way, "
        "`InvoiceReport.execute([id], {})` per invoice with the report "
        "action's output format set to PDF (one `soffice` start per "
        "invoice, default LibreOffice profile):")
    add("")
    rows = []
    for m in measurements:
        compared = [run for run in m['runs']
            if (run.get('render_compare') or {}).get('core_seconds')]
        if not compared:
            continue
        r = compared[0]
        compare = r['render_compare']
        core, count = compare['core_seconds'], compare['invoices']
        night_per = r['first']['timers']['seconds'].get('render', 0) / m['n']
        core_median = h.median(core)
        rows.append([m['backend'], count, f"{night_per:.3f}",
                f"{compare['batch_seconds'] / count:.3f}",
                f"{core_median:.2f}", f"{sum(core) / len(core):.2f}",
                f"{min(core):.2f}–{max(core):.2f}",
                f"{core_median / night_per:.0f}×" if night_per else ''])
    lines += h.table(["Backend", "Invoices",
            "Turnus in the night (s/invoice)",
            "Turnus, same invoices again (s/invoice)",
            "Core one at a time (s/invoice, median)", "Core mean",
            "Core min–max", "Core / Turnus"], rows)
    add("")
    add("LibreOffice down (`[recurring_invoice] soffice = "
        "/nonexistent/soffice`), same data, one run: the night must not "
        "hang; the invoices are posted, their lines fail with the reason "
        "and no mail is sent; the second night retries the failed lines "
        "and fails as fast:")
    add("")
    rows = []
    for m in measurements:
        for r in m['down']:
            if 'first' not in r:
                rows.append([m['backend'], m['n'],
                        f"**hangs**: killed after {r['timeout']} s"
                        if 'timeout' in r else "**crashed**"])
                continue
            reasons = r['after_first']['failure_reasons']
            rows.append([m['backend'], m['n'], h.status(r, 5),
                    f"{r['first']['seconds']:.2f}",
                    r['after_first']['invoice_states'].get('posted', 0),
                    r['after_first']['line_states'].get('failed', 0),
                    r['mails']['first']['count'],
                    (max(reasons, key=reasons.get) if reasons else ''
                        ).replace('|', '\\|'),
                    f"{r['second']['seconds']:.2f}",
                    f"{r['first']['tasks_seconds']:.2f} "
                    f"({h.plural(r['first']['tasks'], 'task')})"])
    lines += h.table(["Backend", "N", "Result", "Night (s)", "Posted",
            "Lines failed", "Mails", "Reason", "2nd night (retry, s)",
            "Queued tasks (s)"], rows, 'lrlrrrrlrr')
    add("")
    add("### Against the targets")
    add("")
    for m, r in done:
        render = r['first']['timers']['seconds'].get('render', 0) / m['n']
        night = r['first']['seconds']
        core = h.median([t for run in m['runs']
                for t in (run.get('render_compare') or {}).get(
                    'core_seconds', [])])
        verdict = "met" if render <= TARGET_RENDER_PER_INVOICE else "missed"
        text = (f"- {m['backend']}, N = {m['n']}: rendering "
            f"{render:.3f} s per invoice (target ≤ "
            f"{TARGET_RENDER_PER_INVOICE} s: {verdict}; core in the same run "
            f"{h.fmt(core)} s, issue: 1.05 s); whole night {night:.1f} s")
        if m['n'] == 200:
            verdict = "met" if night <= TARGET_NIGHT_200 else "missed"
            text += f" (target ≤ {TARGET_NIGHT_200} s: {verdict})"
        add(text + ".")
    for m in measurements:
        for r in m['down']:
            if 'first' in r:
                add(f"- {m['backend']}, N = {m['n']}, converter down: "
                    f"the night ends after {r['first']['seconds']:.1f} s "
                    f"with {r['after_first']['line_states'].get('failed', 0)}"
                    " lines failed and a reason, no mail sent.")
    add("")
    lines += h.load_lines([run for m in measurements
            for run in m['runs'] + m['down']])
    for note in session.notes:
        lines += [note, ""]
    lines += [
        "Re-run only this section (it replaces itself in this file and "
        "keeps the rest):", "", "```",
        "python -m tests.benchmark.delivery --sizes 200 --backend sqlite",
        "TRYTOND_DATABASE_URI=postgresql://postgres@127.0.0.1:5432/ \\",
        "    python -m tests.benchmark.delivery --sizes 200 --backend both",
        "```", "",
        "`--core-pdf` sets how many invoices core renders one at a time "
        "(default 30, 0 to skip), `--repeat` the number of runs (default "
        "3), `--down-timeout` how long the converter-down run may take "
        "before it counts as hanging (default 120 s).", ""]
    return lines


def main(argv=None):
    parser = h.arguments("Benchmark the night with e-mail delivery",
        OUTPUT)
    parser.add_argument('--sizes', default='200',
        help="comma separated numbers of contracts (default: 200)")
    parser.add_argument('--core-pdf', type=int, default=30,
        help="invoices that core renders one report at a time after the "
        "first run, for comparison (default: 30; 0: none)")
    parser.add_argument('--down-timeout', type=float, default=120,
        help="seconds after which the run with the PDF converter down "
        "counts as hanging and is killed (default: 120)")
    options = parser.parse_args(argv)
    options.sizes = [int(s) for s in options.sizes.split(',') if s.strip()]
    with h.Session(options) as session:
        machine = h.machine_description(DISTRIBUTIONS, session.backends)
        measurements = [m for backend in session.backends
            for m in run_backend(options, backend)]
        session.notes.append(h.changed_note(machine))
    session.notes = list(filter(None, session.notes))
    h.update_section(options.output, section(session, machine, measurements),
        before=BEFORE, title=TITLE)
    session.write_json({'machine': machine, 'measurements': measurements})
    return int(not all(r.get('ok') for m in measurements
            for r in m['runs'] + m['down']))


if __name__ == '__main__':
    sys.exit(main())
