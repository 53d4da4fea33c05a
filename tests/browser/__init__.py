# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""End-to-end tests in the web client: the harness of tests/test_browser.py

* ``server``: the demo database (built once, cached by fingerprint), the
  SMTP sink and trytond serving sao on 127.0.0.1
* ``sao``: headless Chromium (Debian's chromium + chromedriver, driven by
  Selenium) and the steps of a user in sao
* ``case``: the TestCase base class: skip/fail rules, one browser per
  class, screenshots of failed steps in var/browser/, timings

No file here is named test_*.py: tests/run_tests.py discovers the tests of
tests/test_browser.py only.
"""
