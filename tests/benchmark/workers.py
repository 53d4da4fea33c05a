# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Benchmark of the whole night on PostgreSQL with the cron process and K
``trytond-worker`` processes (not a test).

N contracts of the flavour ``delivery`` (contracts.py) and a trytond
configuration with ``[queue] worker = True`` and ``[email] uri`` to the
harness's SMTP sink.  For each N and K, on a fresh copy of the filled
database: K real ``trytond-worker -c CONF -d DB -n 1`` processes (each in
its own session, killed with its children at the end), then the night,
``generate_recurring_invoices(D)`` in a cold child as the cron runs it (it
generates and queues the delivery tasks).  The wall time runs from the
night's start until no protocol line is pending and ``ir.queue`` has no
unfinished task.  Checked: every invoice posted, numbers without gap or
duplicate, N mails (one per invoice, its stored PDF).  Peak RSS of every
process (VmHWM of /proc, polled: the cron child, each worker and its
children, soffice included) and the stage timings the run stores.

Core's path on a sample (``--core-sample``, once per N, without
workers): the same contracts generated with automatic delivery off, then
per invoice as a user does it: post, render the report to PDF (one
``soffice`` start), mail it with the template.  Core s/contract =
generation s/contract + median of that per invoice; the ratio is core
s/contract / ours (wall time / N).  Section "Night with queue workers" of
doc/benchmark.md::

    TRYTOND_DATABASE_URI=postgresql://postgres@127.0.0.1:5432/ \\
        python -m tests.benchmark.workers --sizes 1000,10000 --workers 1,2
"""
import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
import types
import urllib.parse

from . import harness as h
from .contracts import due_date, filled
from .delivery import core_one_by_one, delivery_state, state_problems
from .nightly import BEFORE, DISTRIBUTIONS, OUTPUT, TITLE

HEADING = "## Night with queue workers"
TARGETS = ("Targets: the night of 10,000 contracts in ≤ 30 min with 2 "
    "workers, ≥ 6.4× faster than core per contract, ≥ 1.7× faster with "
    "2 workers than with 1, and linear within 10 % (s/contract at 10,000 "
    "against 1,000).")


def night(spec):
    "The cron's call: generate (and queue the delivery) in a transaction"
    pool, context = h.worker_pool(spec)
    result = {}
    with h.measured(result):
        result['error'] = h.call_in_transaction(
            spec['db'], context,
            pool.get('sale.subscription').generate_recurring_invoices,
            dt.date.fromisoformat(spec['date']))
    result['maxrss_kib'] = h.maxrss_kib()
    return result


def state(spec):
    "What the night left, with the stage timings of its run"
    from trytond.transaction import Transaction
    pool, context = h.worker_pool(spec)
    result = delivery_state(pool, spec['db'], context)
    with Transaction().start(spec['db'], 0, context=context):
        result['stages'] = [{name: getattr(run, name) for name in [
                        'generated_count', 'generation_time', 'posting_time',
                        'rendering_time', 'sending_time']}
            for run in pool.get('account.invoice.run').search([])]
    return result


def core(spec):
    """Core's path: generation with automatic delivery off, then the first
    spec['sample'] invoices one at a time (delivery.core_one_by_one)"""
    from trytond.transaction import Transaction
    db, date = spec['db'], dt.date.fromisoformat(spec['date'])
    pool, context = h.worker_pool(spec)
    with Transaction().start(db, 0, context=context) as transaction:
        configuration = pool.get('sale.configuration')(1)
        configuration.automatic_delivery = False
        configuration.save()
        transaction.commit()
    generation = {}
    with h.measured(generation):
        error = h.call_in_transaction(db, context,
            pool.get('sale.subscription').generate_recurring_invoices, date)
    with Transaction().start(db, 0, context=context):
        ids = [i.id for i in pool.get('account.invoice').search(
                [('state', '=', 'draft')], order=[('id', 'ASC')],
                limit=spec['sample'])]
    result = core_one_by_one(pool, db, context, ids, post=True)
    result.update(error=error, generation_seconds=generation['seconds'])
    return result


def pending(backend, db):
    "Protocol lines pending, protocol lines, unfinished queue tasks"
    import psycopg
    uri = urllib.parse.urlparse(backend.uri)._replace(path='/' + db)
    with psycopg.connect(urllib.parse.urlunparse(uri)) as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM account_invoice_run_line "
            "WHERE state = 'pending'), "
            "(SELECT count(*) FROM account_invoice_run_line), "
            "(SELECT count(*) FROM ir_queue WHERE finished_at IS NULL)"
            ).fetchone()


def measure(options, backend, sink, source, n, k):
    "The night of n contracts with k workers on a copy of database source"
    db = f"{source}_k{k}"
    backend.copy(source, db)
    conf = backend.write_config(f'workers-{db}.conf', "[queue]\n"
        "worker = True\n[email]\n" + "".join(
            f"{option} = {value}\n" for _, option, value in sink.settings))
    spec = {'db': db, 'n': n, 'date': due_date().isoformat(),
        'config': conf}
    env = h.worker_env(backend)
    worker_bin = os.path.join(os.path.dirname(sys.executable),
        'trytond-worker')
    result = {'n': n, 'workers': k}
    sink.take()
    with h.machine_load(result), h.PeakRSS() as peaks:
        workers = []
        for index in range(k):
            # Its log stays in the work directory (--keep)
            with open(os.path.join(backend.workdir,
                        f'worker-{db}-{index + 1}.log'), 'w') as log:
                workers.append(subprocess.Popen([worker_bin, '-c', conf,
                            '-d', db, '-n', '1'], env=env,
                        start_new_session=True, stdout=log,
                        stderr=subprocess.STDOUT, cwd=backend.workdir))
        for index, worker in enumerate(workers, 1):
            peaks.watch(worker.pid, f"worker {index}")
        try:
            # The workers load their pool: not part of the night
            time.sleep(options.worker_start)
            start = time.time()
            result['night'] = h.run_worker(
                night, backend, spec, options.timeout)
            deadline = start + options.timeout
            while time.time() < deadline:
                lines_pending, lines, tasks = pending(backend, db)
                if lines and not lines_pending and not tasks:
                    break
                time.sleep(0.5)
            # From the call in the cron child (its pool loaded)
            result['seconds'] = time.time() - result['night'].get(
                'started_at', start)
            result['finished'] = (lines_pending, lines, tasks)
        finally:
            for worker in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGKILL)
            for worker in workers:
                worker.wait(timeout=60)
    result['peaks'] = peaks.by_label()
    # The workers' pool processes and soffice (not waited for by the
    # driver) are measured processes too, approximately
    result['worker_cpu_seconds'] += sum(peaks.cpu.values())
    # Their database sessions end with them
    time.sleep(1)
    messages = sink.take()
    after = result['after'] = h.run_worker(
        state, backend, spec, options.timeout)
    backend.drop(db)
    problems = result['problems'] = []
    if 'error' not in result['night'] or result['night']['error']:
        problems.append(f"the night failed ({result['night']['log']})")
    if result['finished'][0] or result['finished'][2]:
        problems.append(f"not finished after {options.timeout} s: "
            f"{result['finished'][0]} lines pending, "
            f"{result['finished'][2]} tasks")
    if 'crash' in after:
        problems.append(f"no state ({after['log']})")
    else:
        numbers = sorted(int(re.sub(r'\D', '', x)) for x in after['numbers'])
        if numbers != list(range(numbers[0], numbers[0] + n) if numbers
                else []):
            problems.append(f"{len(numbers)} numbers, not {n} in a row")
        problems += h.check_mails(
            messages, after.pop('expected_mails'))['problems']
        problems += state_problems(after, n)
    result['mails'] = len(messages)
    if len(messages) != n:
        problems.append(f"{len(messages)} mails, expected {n}")
    result['ok'] = not problems
    h.log(f"N={n} K={k}: {result['seconds']:.1f} s, {len(messages)} mails, "
        f"ok={result['ok']} {'; '.join(problems)}")
    return result


def measure_core(options, backend, sink, source, n):
    "Core's path on a sample, on a copy of database source"
    spec = {'db': f"{source}_core", 'n': n, 'date': due_date().isoformat(),
        'sample': options.core_sample, 'settings': sink.settings}
    backend.copy(source, spec['db'])
    sink.take()
    result = h.run_measured(core, backend, spec, options.timeout)
    backend.drop(spec['db'])
    if 'post' in result:
        result['mails'] = len(sink.take())
        per_invoice = h.median([sum(t) for t in zip(
                    result['post'], result['render'], result['mail'])])
        result['per_contract'] = result['generation_seconds'] / n + (
            per_invoice or 0)
        h.log(f"core N={n}: {result['per_contract']:.3f} s/contract")
    return result


def section(session, machine, results, cores):
    lines = [HEADING, ""] + h.run_header(session)
    add = lines.append
    add(h.machine_line(machine, h.soffice_version()))
    add("")
    add("N monthly contracts delivered by e-mail (as in the section above), "
        "a trytond configuration with `[queue] worker = True` and the "
        "aiosmtpd sink of the driver as `[email] uri`. For each N and K, on "
        "a fresh copy of the filled database: K `trytond-worker -n 1` "
        "processes (started first, pool loaded, not timed), then the night, "
        "`generate_recurring_invoices(D)` in a fresh process as the cron "
        "runs it: it generates the invoices and queues the delivery tasks, "
        "which the workers post, render and mail. Wall time from the "
        "night's call (the cron child's pool loaded) until no protocol "
        "line is pending and `ir.queue` has no unfinished task (polled "
        "every 0.5 s). Checked: every invoice posted, numbered without "
        "gap or duplicate, N mails (one per "
        "invoice, to its customer, with its stored PDF). Core: the same "
        "contracts generated with automatic delivery off, then "
        f"{session.options.core_sample} invoices one at a time as a user "
        "does it, the report action's output set to PDF (post, whose "
        "queued `print_invoice` renders the report with one `soffice` "
        "start, the report, the mail with the template); core s/contract "
        "= its generation s/contract + the median of post + render + "
        "mail. One run per case.")
    add("")
    walls = {(r['n'], r['workers']): r['seconds'] / r['n'] for r in results
        if r['ok']}
    sizes = sorted({r['n'] for r in results})
    rows = []
    for r in results:
        n, k, per = r['n'], r['workers'], r['seconds'] / r['n']
        core_per = cores.get(n, {}).get('per_contract')
        base = walls.get((n, 1))
        first = walls.get((sizes[0], k))
        stage = (r['after'].get('stages') or [{}])[0]
        rows.append([n, k, h.status(r, 5), f"{r['seconds']:.1f}",
                f"{r['seconds'] / 60:.1f}", f"{n / r['seconds']:.2f}",
                f"{per:.3f}", h.fmt(core_per, 3),
                f"{core_per / per:.1f}×" if core_per else '',
                f"{base / per:.2f}×" if base and k > 1 else '',
                f"{(per / first - 1) * 100:+.0f} %"
                if first and n != sizes[0] else '',
                f"{r['night']['seconds']:.1f}" if 'seconds' in r['night']
                else '', r['mails']] + [h.fmt(stage.get(key), 1) for key in [
                    'generation_time', 'posting_time', 'rendering_time',
                    'sending_time']] + [stage.get('generated_count', '')])
    lines += h.table(["N", "Workers", "Result", "Wall (s)", "Wall (min)",
            "Contracts/s", "s/contract", "Core s/contract", "Ratio to core",
            "Speed-up over 1 worker", "Linearity (s/contract vs N = "
            f"{sizes[0]})", "Cron child (s)", "Mails", "Generation (s)",
            "Posting (s)", "Rendering (s)", "Sending (s)", "Generated"],
        rows, 'rrl' + 'r' * 15)
    add("")
    add("Stage timings are those the run stores (`account.invoice.run`: "
        "generation in the cron, posting, rendering and sending summed "
        "over the protocol lines, so over the workers). Peak RSS (VmHWM) "
        "of every process, MiB:")
    add("")
    rows = []
    for r in results:
        peaks = [f"cron child {h.mib(r['night'].get('maxrss_kib')) or 0:.0f}"]
        for label, processes in sorted(r['peaks'].items()):
            # The largest of each program; LibreOffice is restarted
            # after converter_max_documents, so it has many processes
            largest, count = {}, {}
            for comm, kib in processes:
                largest[comm] = max(largest.get(comm, 0), kib)
                count[comm] = count.get(comm, 0) + 1
            peaks.append(f"{label}: " + ", ".join(
                    f"{comm} {kib / 1024:.0f}"
                    + (f" (largest of {count[comm]})"
                        if count[comm] > 1 else "")
                    for comm, kib in sorted(
                        largest.items(), key=lambda i: -i[1])
                    if kib >= 8 * 1024))
        rows.append([r['n'], r['workers'], "; ".join(peaks)])
    lines += h.table(["N", "Workers", "Peak RSS per process (MiB)"], rows,
        'rrl')
    add("")
    for n, c in sorted(cores.items()):
        if 'post' not in c:
            add(f"- Core, N = {n}: **no result** ({c.get('log')}).")
            continue
        add(f"- Core, N = {n}: generation {c['generation_seconds']:.1f} s "
            f"({c['generation_seconds'] / n:.3f} s/contract); per invoice "
            f"(median of {c['invoices']}): post "
            f"{h.median(c['post']):.3f} s, render "
            f"{h.median(c['render']):.2f} s, mail {h.median(c['mail']):.3f}"
            f" s; {c['mails']} mails"
            + ("; **" + "; ".join(c['problems']) + "**"
                if c['problems'] else "") + ".")
    add("")
    add(TARGETS)
    add("")
    lines += h.load_lines(results)
    for note in session.notes:
        lines += [note, ""]
    lines += ["Re-run only this section (PostgreSQL only; it replaces "
        "itself in this file and keeps the rest):", "", "```",
        "TRYTOND_DATABASE_URI=postgresql://postgres@127.0.0.1:5432/ \\",
        "    python -m tests.benchmark.workers --sizes 1000,10000 "
        "--workers 1,2", "```", "",
        "`--core-sample` sets how many invoices core delivers one at a time "
        "(default 30), `--timeout` how long a night may take (default "
        "7200 s), `--worker-start` the seconds the workers get to load "
        "their pool before the night starts (default 15).", ""]
    return lines


def merge(options):
    "The section of the runs of the --json files given to --merge"
    runs = []
    for path in options.merge:
        with open(path) as fp:
            runs.append(json.load(fp))
    results = [r for run in runs for r in run['results']]
    results.sort(key=lambda r: (r['n'], r['workers']))
    cores = {}
    for run in runs:
        cores.update({int(n): c for n, c in run['core'].items()})
    started = min([dt.datetime.fromisoformat(run['started'])
            for run in runs if run.get('started')]
        or [dt.datetime.now()])
    notes = []
    codes = sorted({run['machine']['code'] for run in runs})
    if len({run['machine']['fingerprint'] for run in runs}) > 1:
        notes.append(f"**The runs measured different versions of modules/** "
            f"({', '.join(codes)}).")
    session = types.SimpleNamespace(
        options=options, started=started, notes=notes,
        command=" &&\n".join(run.get('command') or (
                "python -m tests.benchmark.workers --sizes "
                + ",".join(sorted({str(r['n']) for r in run['results']}))
                + " --workers " + ",".join(
                    sorted({str(r['workers']) for r in run['results']})))
            for run in runs),
        total=lambda: sum(run.get('total', 0) for run in runs))
    h.update_section(options.output, section(session, runs[-1]['machine'],
            results, cores), before=BEFORE, title=TITLE)
    return int(not all(r['ok'] for r in results))


def main(argv=None):
    parser = h.arguments("Benchmark the night with queue workers", OUTPUT,
        backend='postgresql', backends=['postgresql'], timeout=7200,
        repeat=1)
    parser.add_argument('--sizes', default='1000,10000',
        help="comma separated numbers of contracts (default: 1000,10000)")
    parser.add_argument('--workers', default='1,2',
        help="comma separated numbers of workers (default: 1,2)")
    parser.add_argument('--core-sample', type=int, default=30,
        help="invoices core delivers one at a time (default: 30)")
    parser.add_argument('--worker-start', type=float, default=15,
        help="seconds the workers get to start (default: 15)")
    parser.add_argument('--merge', nargs='+', metavar='JSON',
        help="write the section from the --json files of earlier runs "
        "(e.g. one per number of workers) instead of measuring")
    options = parser.parse_args(argv)
    if options.merge:
        return merge(options)
    sizes = [int(s) for s in options.sizes.split(',') if s.strip()]
    counts = [int(s) for s in options.workers.split(',') if s.strip()]
    results, cores = [], {}
    with h.Session(options, prefix='bench_workers') as session, \
            h.MailSink() as sink:
        backend, = session.backends
        machine = h.machine_description(DISTRIBUTIONS, session.backends)
        for n, (db, _) in filled(backend, 'delivery', sizes,
                options.timeout).items():
            for k in counts:
                for _ in range(options.repeat):
                    results.append(measure(options, backend, sink, db, n, k))
            if options.core_sample:
                cores[n] = measure_core(options, backend, sink, db, n)
            backend.drop(db)
        session.notes.append(h.changed_note(machine))
    session.notes = list(filter(None, session.notes))
    h.update_section(options.output, section(session, machine, results,
            cores), before=BEFORE, title=TITLE)
    session.write_json({'machine': machine, 'results': results,
            'core': cores, 'command': session.command,
            'started': session.started.isoformat(),
            'total': session.total()})
    return int(not all(r['ok'] for r in results))


if __name__ == '__main__':
    sys.exit(main())
