# This file is part of Turnus.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Driving sao, Tryton's web client, in headless Chromium with Selenium

``start_chromium()`` starts Debian's chromium through Debian's
chromedriver (never Selenium Manager: both paths are given, so nothing is
downloaded), ``Sao`` wraps the driver with the steps a user takes: log
in, open a menu entry, fill a field, click a button, answer a wizard.

Every wait is explicit (``WebDriverWait``), and "idle" means sao has no
request running (``jQuery.active == 0``) and no animation is playing.

The selectors come from sao 8.0 (var/sao/package/dist/tryton-sao.js):

* login: ``.login-dialog`` with ``input#database``/``select#database``
  and ``input#login``, then the password in ``.ask-dialog
  input#ask-dialog-entry``
* menu: ``#menu`` is a tree view; its rows ``tr`` carry the entry name,
  ``span.expander`` unfolds a row
* tabs: ``#tablist li.active`` (title), ``#tabcontent > .tab-pane.active``
  (content); the tab's toolbar buttons have the ids of sao's actions
  (``#new_``, ``#save``, ``#switch_``, ``#reload``, ``#relate``, ...);
  ``#tabcontent[data-view-type]`` is the type of the view shown
* form fields: ``[name=FIELD]`` (input, select, textarea) inside
  ``.form-FIELDTYPE``; form buttons: ``button[name=BUTTON]``; labels:
  ``label`` elements of ``.form-label``
* list rows: ``.treeview tbody tr``, cells ``td[data-title]``
* dialogs: ``.modal.in`` (wizards ``.wizard-dialog``, title
  ``.modal-header .model-title``; buttons in ``.modal-footer``, the
  default one is ``.btn-primary``)
* calendar (FullCalendar 3): ``.calendar .fc-event`` with ``.fc-title``,
  ``.fc-next-button``/``.fc-prev-button``
"""
import datetime as dt
import json
import os
import re
import shutil
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException, ElementNotInteractableException,
    JavascriptException, NoSuchElementException,
    StaleElementReferenceException, TimeoutException, WebDriverException)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

# Debian's packages chromium and chromium-driver
CHROMIUM = os.environ.get('BROWSER_CHROMIUM') or '/usr/bin/chromium'
CHROMEDRIVER = (
    os.environ.get('BROWSER_CHROMEDRIVER') or '/usr/bin/chromedriver')
# Without the background networking flags, Chromium's own connections are
# refused on a closed network and slow everything down
CHROMIUM_FLAGS = [
    '--headless=new',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-dev-shm-usage',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-extensions',
    '--disable-default-apps',
    '--window-size=1920,1080',
    ]
TIMEOUT = float(os.environ.get('BROWSER_TIMEOUT') or 30)
IGNORED = (
    NoSuchElementException, StaleElementReferenceException,
    ElementNotInteractableException, JavascriptException)


class Browser:
    "A headless Chromium with its own profile directory"

    def __init__(self, language='en-US'):
        self.profile = tempfile.mkdtemp(prefix='turnus-chromium-')
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f'--user-data-dir={self.profile}')
        options.add_argument(f'--lang={language}')
        # files the client offers for download land here
        self.downloads = os.path.join(self.profile, 'downloads')
        os.makedirs(self.downloads)
        options.add_experimental_option(
            'prefs', {
                'intl.accept_languages': language,
                'download.default_directory': self.downloads,
                'download.prompt_for_download': False,
                })
        options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
        self.log = os.path.join(self.profile, 'chromedriver.log')
        service = Service(CHROMEDRIVER, log_output=self.log)
        try:
            self.driver = webdriver.Chrome(options=options, service=service)
        except BaseException:
            shutil.rmtree(self.profile, ignore_errors=True)
            raise
        self.driver.set_page_load_timeout(60)
        self.driver.set_script_timeout(60)
        self.driver.execute_cdp_cmd('Browser.setDownloadBehavior', {
                'behavior': 'allow', 'downloadPath': self.downloads})

    def quit(self):
        try:
            self.driver.quit()
        except WebDriverException:
            pass
        shutil.rmtree(self.profile, ignore_errors=True)


def _text(element):
    "The visible text of element, whitespace collapsed"
    return ' '.join((element.text or '').split())


class Sao:
    "The steps of a user in sao"

    def __init__(self, driver, url, database, timeout=TIMEOUT):
        self.driver = driver
        self.url = url
        self.database = database
        self.timeout = timeout

    # ---------------------------------------------------------- basics
    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, condition, message, timeout=None):
        """Wait until condition(driver) returns something true and return
        it; message says what was awaited"""
        wait = WebDriverWait(
            self.driver, timeout or self.timeout, poll_frequency=0.1,
            ignored_exceptions=IGNORED)
        return wait.until(condition, message)

    def idle(self, timeout=None):
        """Wait until sao has had no request running and nothing moving
        for three polls in a row (sao chains requests: a single poll can
        fall between two of them)"""
        quiet = []

        def idle(driver):
            if driver.execute_script(
                    "return !!(window.jQuery && window.Sao"
                    " && jQuery.active === 0"
                    " && jQuery(':animated').length === 0"
                    " && !jQuery('.modal.fade:not(.in):visible').length);"):
                quiet.append(True)
            else:
                quiet.clear()
            return len(quiet) >= 3
        return self.wait(idle, "sao to be idle (no request running)", timeout)

    def visible(self, css, root=None, timeout=None, text=None):
        """Wait for a displayed element matching css (and whose text is
        text, if given) and return it"""
        def find(driver):
            for element in (root or driver).find_elements(
                    By.CSS_SELECTOR, css):
                if element.is_displayed() and (
                        text is None or _text(element) == text):
                    return element
            return None
        what = f"a visible {css!r}" + (f" reading {text!r}" if text else '')
        return self.wait(find, what, timeout)

    def all_visible(self, css, root=None):
        return [
            e for e in (root or self.driver).find_elements(
                By.CSS_SELECTOR, css) if e.is_displayed()]

    def click(self, element):
        """Click element like a user; when an overlay is still fading out,
        wait and click again"""
        self.js("arguments[0].scrollIntoView({block: 'center'});", element)

        def clicked(driver):
            try:
                element.click()
            except ElementClickInterceptedException:
                return False
            return True
        self.wait(clicked, "the element to take the click")

    def type(self, element, text, clear=True):
        """Type text into element (replacing its content); while sao still
        renders the widget, wait and try again"""
        def typed(driver):
            if not element.is_enabled() or element.get_attribute('readonly'):
                return False
            if clear:
                element.send_keys(Keys.CONTROL, 'a')
                element.send_keys(Keys.DELETE)
            element.send_keys(text)
            return True
        self.wait(typed, f"to type {text!r} into {_describe(element)}")

    # ---------------------------------------------------------- session
    def open(self, fragment=''):
        "Load the web client, optionally at a URL fragment (without #)"
        self.driver.get(self.url + '#' + (fragment or self.database))

    def login(self, login, password):
        "Log in through the login dialog and wait for the menu"
        start = time.monotonic()
        self.open()
        dialog = self.visible('.login-dialog')
        database = [
            e for e in dialog.find_elements(By.CSS_SELECTOR, '#database')
            if e.is_displayed()]
        if database:
            field = database[0]
            if field.tag_name == 'select':
                Select(field).select_by_value(self.database)
            elif not field.get_attribute('readonly'):
                self.type(field, self.database)
        user = self.visible('input#login', dialog)
        self.type(user, login)
        user.send_keys(Keys.RETURN)
        password_input = self.visible(
            '.ask-dialog input#ask-dialog-entry[type=password]')
        password_input.send_keys(password)
        password_input.send_keys(Keys.RETURN)
        self.wait_menu()
        self.idle()
        return time.monotonic() - start

    def wait_menu(self):
        "Wait until the main menu shows its entries"
        return self.wait(
            lambda d: [r for r in d.find_elements(
                    By.CSS_SELECTOR, '#menu .treeview tbody tr')
                if r.is_displayed() and _text(r)],
            "the main menu")

    def logout(self):
        self.user_menu_item(-1)
        self.visible('.login-dialog')

    def user_menu_item(self, index):
        """Click the index-th of the entries of the user menu
        (Preferences..., Help..., Logout)"""
        toggle = self.visible('#user-preferences > a.dropdown-toggle')
        self.click(toggle)
        self.visible('#user-preferences.open')
        # sao fills the menu when it opens (notifications first)
        items = self.wait(lambda d: (lambda items: items[-3:]
                if len(items) >= 3 else None)(self.all_visible(
                    '#user-preferences li.notification-item'
                    ' > a[role=menuitem]')),
            "the entries of the user menu")
        self.click(items[index])

    def user_name(self):
        return _text(self.visible('#user-preferences > a.dropdown-toggle'))

    def menu_texts(self):
        "The names of the menu entries shown"
        return [
            _text(r) for r in self.driver.find_elements(
                By.CSS_SELECTOR, '#menu .treeview tbody tr')
            if r.is_displayed()]

    def _menu_row(self, name, after=None):
        "The first menu row reading name after the row after"
        script = """
            const [name, after] = arguments;
            const rows = Array.from(document.querySelectorAll(
                '#menu .treeview tbody tr'));
            let start = after ? rows.indexOf(after) + 1 : 0;
            if (after && start === 0) { return null; }
            for (const row of rows.slice(start)) {
                if (row.offsetParent !== null
                        && row.innerText.trim().replace(/\\s+/g, ' ')
                            === name) {
                    return row;
                }
            }
            return null;
        """
        return self.wait(
            lambda d: d.execute_script(script, name, after),
            f"the menu entry {name!r}")

    def open_menu(self, *path):
        """Open the menu entry at path (names of the entries from the top)
        and wait for the tab or the wizard it opens"""
        self.wait_menu()
        self.idle()
        row = None
        for i, name in enumerate(path):
            row = self._menu_row(name, row)
            if i < len(path) - 1:
                expander = row.find_elements(By.CSS_SELECTOR, 'span.expander')
                child = path[i + 1]
                if not self.js("""
                        const [row, name] = arguments;
                        let next = row.nextElementSibling;
                        while (next) {
                            if (next.innerText.trim().replace(/\\s+/g, ' ')
                                    === name) { return true; }
                            next = next.nextElementSibling;
                        }
                        return false;""", row, child):
                    if expander:
                        self.click(expander[0])
                    else:
                        self.click(row)
                self.idle()
        tabs = self.tab_count()
        dialogs = len(self.all_visible('.modal.in'))
        cell = row.find_elements(By.CSS_SELECTOR, 'td .cell')
        self.click(cell[0] if cell else row)
        self.wait(
            lambda d: (self.tab_count() > tabs
                or len(self.all_visible('.modal.in')) > dialogs),
            f"menu entry {' › '.join(path)} to open a tab or dialog")
        self.idle()

    # ---------------------------------------------------------- tabs
    def tab_count(self):
        return len(self.driver.find_elements(By.CSS_SELECTOR, '#tablist > li'))

    def tab(self):
        "The content of the active tab"
        return self.visible('#tabcontent > .tab-pane.active')

    def tab_title(self):
        link = self.visible('#tablist > li.active > a')
        return _text(link).lstrip('×').strip()

    def close_tabs(self):
        "Close every tab (answering 'discard' to unsaved changes)"
        for _ in range(20):
            buttons = self.all_visible('#tablist > li button.close')
            if not buttons:
                break
            count = self.tab_count()
            self.click(buttons[-1])
            try:
                self.wait(lambda d: self.tab_count() < count
                    or self.all_visible('.modal.in'), "the tab to close",
                    timeout=10)
            except TimeoutException:
                pass
            for dialog in self.all_visible('.modal.in'):
                # "Save changes?": No
                buttons = dialog.find_elements(
                    By.CSS_SELECTOR, '.modal-footer button')
                if buttons:
                    self.click(buttons[0])
            self.idle()

    def view_type(self):
        return self.js(
            "return jQuery('#tabcontent').attr('data-view-type');")

    def wait_view(self, view_type):
        self.wait(lambda d: self.view_type() == view_type,
            f"the tab to show its {view_type} view")
        self.idle()
        return self.tab()

    def toolbar(self, action):
        """Click a button of the active tab's toolbar: new_, save,
        switch_, reload, previous, next, relate, action, print, attach"""
        button = self.visible(f'.toolbar button#{action}', self.tab())
        self.click(button)
        return button

    def toolbar_menu(self, action):
        "Open the drop-down relate/action/print; return its entries"
        self.toolbar(action)
        menu = self.visible(
            f'.toolbar ul.dropdown-menu[aria-labelledby={action}]',
            self.tab())
        return [
            a for a in menu.find_elements(By.CSS_SELECTOR, 'li > a')
            if a.is_displayed()]

    def save(self):
        self.toolbar('save')
        self.idle()
        self.wait_no_error()

    def open_url(self, fragment):
        "Open a tab by URL fragment, e.g. model/sale.subscription/3"
        tabs = self.tab_count()
        self.js("window.location.hash = arguments[0];",
            f'{self.database}/{fragment}')
        self.wait(lambda d: self.tab_count() > tabs,
            f"the tab of #{fragment}")
        self.idle()

    # ---------------------------------------------------------- lists
    def rows(self, root=None):
        "The rows of the list view in root (the tab by default)"
        root = root or self.tab()
        return [
            r for r in root.find_elements(
                By.CSS_SELECTOR, '.treeview tbody > tr')
            if r.is_displayed() and _text(r)]

    def wait_rows(self, root=None, minimum=1, text=None):
        "Wait until the list shows minimum rows (containing text)"
        def rows(driver):
            found = self.rows(root)
            if text is not None:
                found = [r for r in found if text in _text(r)]
            return found if len(found) >= minimum else None
        return self.wait(rows, f"{minimum} list row(s)"
            + (f" containing {text!r}" if text else ''))

    def cell(self, row, title):
        "The text of the cell of row in the column titled title"
        for td in row.find_elements(By.CSS_SELECTOR, 'td[data-title]'):
            if td.get_attribute('data-title').rstrip(': ').strip() == title:
                return _text(td)
        raise NoSuchElementException(f"no column {title!r}")

    def open_row(self, row):
        """Open a list row in the form view: double click on a cell
        without a link (a link opens the record it shows)"""
        cells = [
            td for td in row.find_elements(By.CSS_SELECTOR, 'td[data-title]')
            if td.is_displayed()
            and not td.find_elements(By.CSS_SELECTOR, 'a')]
        target = cells[-1] if cells else row
        self.js("arguments[0].scrollIntoView({block: 'center'});", target)
        ActionChains(self.driver).double_click(target).perform()

    def row_button(self, row, name):
        """Click the button name of a list row: sao runs a row's button
        only for its current record, so the row is selected first (as a
        user clicks the row, then the button)"""
        if 'selected' not in (row.get_attribute('class') or ''):
            cells = [
                td for td in row.find_elements(
                    By.CSS_SELECTOR, 'td[data-title]')
                if td.is_displayed()
                and not td.find_elements(By.CSS_SELECTOR, 'a, button')]
            self.click(cells[0] if cells else row)
            self.wait(lambda d: 'selected' in (
                    row.get_attribute('class') or ''),
                "the row to be selected")
        button = self.visible(f'button[name="{name}"]', row)
        self.wait(lambda d: button.is_enabled(),
            f"the button {name} of the row to be enabled")
        self.click(button)
        self.idle()

    def select_row(self, row):
        "Tick the selection box of a list row"
        box = row.find_element(By.CSS_SELECTOR, 'td.selection-state input')
        if not box.is_selected():
            self.click(box)
        self.wait(lambda d: box.is_selected(), "the row to be selected")

    def tab_domains(self):
        """The tabs of the action's domains above the list: a list of
        (name, counter or None)"""
        result = []
        for link in self.all_visible('.tab-domain a[role=tab]', self.tab()):
            badge = link.find_elements(By.CSS_SELECTOR, '.badge')
            count = _text(badge[0]) if badge else ''
            name = _text(link)
            if count and name.endswith(count):
                name = name[:-len(count)].strip()
            result.append((name, count or None))
        return result

    def tab_domain(self, name):
        "Click the domain tab name of the list"
        for link in self.all_visible('.tab-domain a[role=tab]', self.tab()):
            badge = link.find_elements(By.CSS_SELECTOR, '.badge')
            text = _text(link)
            if badge and _text(badge[0]):
                text = text[:-len(_text(badge[0]))].strip()
            if text == name:
                self.click(link)
                self.idle()
                return link
        raise NoSuchElementException(f"no domain tab {name!r}")

    # ---------------------------------------------------------- forms
    def widget(self, name, root=None):
        """The input/select/textarea of field name in root (the top
        dialog, else the active tab); when it is on another page of a
        notebook, that page is opened first (as a user clicks its tab)"""
        root = root or self.top()
        css = (f'input[name="{name}"]:not([type=date]):not([type=hidden]),'
            f' select[name="{name}"], textarea[name="{name}"]')
        self.wait(lambda d: root.find_elements(By.CSS_SELECTOR, css),
            f"the field {name}")
        for _ in range(3):
            links = self.js("""
                const [root, css] = arguments;
                const links = [];
                const element = root.querySelector(css);
                let pane = element && element.closest(
                    '.form-notebook > .tab-content > .tab-pane');
                while (pane && root.contains(pane)) {
                    if (!pane.classList.contains('active')) {
                        const notebook = pane.closest('.form-notebook');
                        const link = notebook.querySelector(
                            ':scope > .nav a[href="#' + pane.id + '"]');
                        if (link) { links.unshift(link); }
                    }
                    pane = pane.parentElement.closest(
                        '.form-notebook > .tab-content > .tab-pane');
                }
                return links;""", root, css)
            if not links:
                break
            self.click(links[0])
            self.idle()
        return self.visible(css, root)

    def top(self):
        "The top-most dialog if one is open, else the active tab"
        dialogs = self.all_visible('.modal.in')
        if dialogs:
            return max(dialogs, key=lambda e: int(
                    e.value_of_css_property('z-index') or 0))
        return self.tab()

    def set_char(self, name, value, root=None):
        widget = self.widget(name, root)
        if widget.get_attribute('type') == 'text' and self.js(
                "return arguments[0].parentElement.querySelector("
                "'input[type=number]') !== null;", widget):
            # A number widget shows a text input and edits in a number
            # input it switches to on focus
            self.click(widget)
            self.idle()
            widget = self.visible(
                f'input[type=number][name="{name}"]', root or self.top())
        self.type(widget, value)
        widget.send_keys(Keys.TAB)
        self.idle()

    def set_selection(self, name, value, root=None):
        "Choose the selection key value of field name"
        widget = self.widget(name, root)
        Select(widget).select_by_value(_json(value))
        self.idle()

    def selection(self, name, root=None):
        "(key, text) of the selection field name"
        widget = self.widget(name, root)
        option = Select(widget).first_selected_option
        return json.loads(option.get_attribute('value')), _text(option)

    def set_many2one(self, name, text, choice=None, root=None):
        """Type text into the many2one field name and pick the completion
        reading choice (default: the first one containing text)"""
        self.idle()
        message = f"the completion {choice or text!r} of the field {name}"
        for attempt in range(3):
            # sao can render the widget again while the dialog loads and
            # lose the typed text or its key events: type again then
            widget = self.widget(name, root)
            self.type(widget, text)
            container = widget.find_element(By.XPATH,
                "./ancestor::div[contains(@class, 'dropdown')][1]")

            def completion(driver):
                for a in container.find_elements(
                        By.CSS_SELECTOR, 'li.completion > a'):
                    if a.is_displayed() and (_text(a) == choice
                            if choice else text in _text(a)):
                        return a
                return None
            try:
                item = self.wait(
                    completion, message, timeout=self.timeout / 3)
                break
            except TimeoutException:
                if attempt == 2:
                    raise
        self.click(item)
        self.idle()
        self.wait(lambda d: widget.get_attribute('value'),
            f"the field {name} to be set")

    def set_date(self, name, date, root=None):
        "Type date into the date field name in the user's date format"
        text = self.format_date(date)
        self.set_char(name, text, root)
        self.wait_value(name, text, root)

    def set_boolean(self, name, value, root=None):
        "Tick (value True) or untick the check box of field name"
        widget = self.widget(name, root)
        if widget.is_selected() != bool(value):
            self.click(widget)
        self.wait(lambda d: widget.is_selected() == bool(value),
            f"the check box {name} to be {'on' if value else 'off'}")
        self.idle()

    def format_date(self, date):
        "date as sao shows it to the user (the language's format)"
        return self.js(
            "return Sao.common.format_date(Sao.common.date_format(),"
            " Sao.Date(arguments[0], arguments[1] - 1, arguments[2]));",
            date.year, date.month, date.day)

    def column_titles(self, root=None):
        "The titles of the columns of the list in root"
        root = root or self.tab()
        return [
            _text(th) for th in root.find_elements(
                By.CSS_SELECTOR, '.treeview thead th')
            if th.is_displayed() and _text(th)]

    def value(self, name, root=None):
        "The text the field name shows"
        widget = self.widget(name, root)
        if widget.tag_name == 'select':
            return _text(Select(widget).first_selected_option)
        return widget.get_attribute('value')

    def wait_value(self, name, expected, root=None):
        "Wait until the field name shows expected"
        return self.wait(lambda d: self.value(name, root) == expected,
            f"the field {name} to show {expected!r}")

    def wait_selection(self, name, key, root=None):
        "Wait until the selection field name has the key key"
        return self.wait(lambda d: self.selection(name, root)[0] == key,
            f"the field {name} to be {key!r}")

    def button(self, name, root=None):
        "The visible form button name (button[name=...])"
        return self.visible(f'button[name="{name}"]', root or self.top())

    def click_button(self, name, root=None):
        button = self.button(name, root)
        self.wait(lambda d: button.is_enabled(), f"button {name} enabled")
        self.click(button)
        return button

    def labels(self, root=None):
        "The texts of the field labels shown"
        root = root or self.top()
        return [
            _text(e) for e in root.find_elements(
                By.CSS_SELECTOR, '.form-label label, label.form-label')
            if e.is_displayed() and _text(e)]

    def one2many(self, name, root=None):
        "The element of the one2many widget of field name in the active tab"
        return self.wait(lambda d: d.execute_script("""
            const tab = Sao.Tab.tabs.get_current();
            const view = tab && tab.screen && tab.screen.current_view;
            const widgets = view && view.widgets && view.widgets[arguments[0]];
            return widgets && widgets.length ? widgets[0].el[0] : null;
            """, name), f"the one2many field {name}")

    def one2many_button(self, name, button):
        """Click a button of the one2many field name: new, open, del,
        switch, previous, next"""
        element = self.js("""
            const widget = Sao.Tab.tabs.get_current().screen.current_view
                .widgets[arguments[0]][0];
            const button = widget['but_' + arguments[1]];
            return button ? button[0] : null;
            """, name, button)
        if element is None:
            raise NoSuchElementException(
                f"no button {button} on the field {name}")
        self.wait(lambda d: element.is_enabled(),
            f"the button {button} of {name} to be enabled")
        self.click(element)
        self.idle()

    def page(self, text, root=None):
        "Open the notebook page titled text, as a user clicks its tab"
        root = root or self.top()

        def link(driver):
            for element in root.find_elements(
                    By.CSS_SELECTOR, '.form-notebook > .nav a'):
                if element.is_displayed() and _text(element) == text:
                    return element
        self.click(self.wait(link, f"the notebook page {text!r}"))
        self.idle()

    def save_binary(self, name, directory):
        """Download the file of the binary field name as a user does:
        Save As, then the link of the Download dialog; return its path in
        directory once it is complete"""
        def save_as():
            return self.js("""
                const widget = Sao.Tab.tabs.get_current().screen.current_view
                    .widgets[arguments[0]][0];
                return widget.but_save_as ? widget.but_save_as[0] : null;
                """, name)
        if save_as() is None:
            raise NoSuchElementException(f"no Save As on the field {name}")
        before = set(os.listdir(directory))
        # sao may display the record again after a button (a reload):
        # the button is looked up again for each try, never a stale one
        self.idle()

        def clicked(driver):
            element = save_as()
            if element is None:
                return False
            self.js("arguments[0].scrollIntoView({block: 'center'});",
                element)
            try:
                element.click()
            except ElementClickInterceptedException:
                return False
            return True
        self.wait(clicked, f"Save As of {name} to take the click")
        dialog = self.dialog()
        link = self.visible('a[download]', dialog)
        filename = link.get_attribute('download')
        self.click(link)

        def downloaded(driver):
            new = set(os.listdir(directory)) - before
            if filename in new and not any(
                    n.endswith('.crdownload') for n in new):
                return os.path.join(directory, filename)
        return self.wait(downloaded, f"the download of {filename}")

    def one2many_new(self, name):
        "Click New of the one2many field name"
        self.one2many_button(name, 'new')

    def record_id(self):
        "The id of the record of the active tab (negative when unsaved)"
        return self.js("""
            const tab = Sao.Tab.tabs.get_current();
            const record = tab && tab.screen.current_record;
            return record ? record.id : null;""")

    # ---------------------------------------------------------- dialogs
    def dialog(self, css='.modal.in', timeout=None):
        return self.visible(css, timeout=timeout)

    def wizard(self, timeout=None):
        "The visible wizard dialog"
        dialog = self.visible('.wizard-dialog.in', timeout=timeout)
        self.idle()
        return dialog

    def dialog_title(self, dialog):
        titles = [
            _text(e) for e in dialog.find_elements(
                By.CSS_SELECTOR, '.modal-header .model-title,'
                ' .modal-header .modal-title')
            if _text(e)]
        return titles[0] if titles else ''

    def dialog_buttons(self, dialog):
        return [
            b for b in dialog.find_elements(
                By.CSS_SELECTOR, '.modal-footer button')
            if b.is_displayed()]

    def dialog_button(self, dialog, text=None):
        """Click the dialog's button reading text (default: its default
        button, .btn-primary)"""
        def find(driver):
            for button in self.dialog_buttons(dialog):
                if (text is None and 'btn-primary' in (
                            button.get_attribute('class') or '')) or (
                        text is not None
                        and _text(button).casefold() == text.casefold()):
                    return button
            return None
        button = self.wait(find, f"the button {text or '(default)'!r} of "
            "the dialog")
        self.wait(lambda d: button.is_enabled(), "the button to be enabled")
        self.click(button)
        return button

    def wait_closed(self, dialog):
        self.wait(lambda d: not _displayed(dialog), "the dialog to close")
        self.idle()

    def wait_no_error(self):
        "Fail when sao shows an error or warning dialog"
        errors = self.all_visible(
            '.error-dialog.in, .warning-dialog.in, .user-warning-dialog.in,'
            ' .message-dialog.in')
        if errors:
            raise AssertionError(
                "sao shows a message: " + ' | '.join(
                    _text(e) for e in errors))

    def messages(self):
        "The texts of the message/error dialogs shown"
        return [
            _text(e) for e in self.all_visible(
                '.error-dialog.in, .warning-dialog.in,'
                ' .user-warning-dialog.in, .message-dialog.in')]

    # ---------------------------------------------------------- calendar
    def calendar_events(self, root=None):
        return [
            e for e in (root or self.tab()).find_elements(
                By.CSS_SELECTOR, '.calendar .fc-event')
            if e.is_displayed()]

    def calendar_event(self, title, root=None):
        "Wait for the calendar event whose title is title"
        def event(driver):
            for element in self.calendar_events(root):
                titles = element.find_elements(By.CSS_SELECTOR, '.fc-title')
                if titles and _text(titles[0]) == title:
                    return element
            return None
        return self.wait(event, f"the calendar event {title!r}")

    # ---------------------------------------------------------- artifacts
    def save_artifacts(self, directory, name):
        """Save a screenshot, the page's HTML and the browser's console
        log; return their paths"""
        os.makedirs(directory, exist_ok=True)
        base = os.path.join(directory, _slug(name))
        paths = []
        try:
            if self.driver.save_screenshot(base + '.png'):
                paths.append(base + '.png')
        except WebDriverException:
            pass
        try:
            with open(base + '.html', 'w') as fp:
                fp.write(self.driver.page_source)
            paths.append(base + '.html')
        except (WebDriverException, OSError):
            pass
        try:
            entries = self.driver.get_log('browser')
            with open(base + '.console.txt', 'w') as fp:
                for entry in entries:
                    fp.write(f"{entry.get('level')} {entry.get('message')}\n")
            paths.append(base + '.console.txt')
        except (WebDriverException, OSError):
            pass
        return paths


def _describe(element):
    try:
        return (f"<{element.tag_name} name={element.get_attribute('name')!r}"
            f" class={element.get_attribute('class')!r}>")
    except WebDriverException:
        return "an element"


def _displayed(element):
    try:
        return element.is_displayed()
    except StaleElementReferenceException:
        return False


def _json(value):
    return json.dumps(value)


def _slug(name):
    stamp = dt.datetime.now().strftime('%H%M%S')
    return stamp + '-' + re.sub(r'[^A-Za-z0-9_.-]+', '-', name).strip('-')
