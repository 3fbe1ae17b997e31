"""The train notebooks in a real browser: JupyterLab on the loopback address, driven by headless Chromium (Playwright).

For each train notebook (copied with tiny parameters): Run All, and the number of plotted points in the live figure
must increase while training runs; then set knobs through the panel's widgets, click Start, see the panel's figure
grow, click Stop, and find the run stopped with a checkpoint that resumes. Screenshots go to tests/artifacts/.
Skips (with the reason) only where no Chromium or Playwright can be found; `make browser` installs them.
"""
import json, os, re, shutil, socket, subprocess, sys, time, uuid
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / 'tests' / 'artifacts'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run']

def find_chromium():
    for p in (os.environ.get('SSL_WORKBENCH_CHROMIUM'), '/usr/bin/chromium', shutil.which('chromium'),
              shutil.which('chromium-browser'), shutil.which('google-chrome')):
        if p and Path(p).exists(): return p
    return None

CHROMIUM = find_chromium()
try: from playwright.sync_api import sync_playwright
except ImportError: sync_playwright = None
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (install it: `make browser` runs apt-get install -y chromium)"),
              pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install playwright; no `playwright install` needed)")]

# Tiny runs that still train for ~10-25 s on a 2-core CPU (the trainer logs every 10 steps: the figure moves ~once a second);
# JCL and AdaSim steps are quicker on 8×8 digits, so they get more epochs. The figure is sampled 4 times a second.
NOTEBOOKS = {
    'train_nnclr': dict(dataset='digits', train_per_class=64, test_per_class=20, epochs=10, batch_size=32, queue_size=256,
                        show_umap=False),
    'train_excb': dict(dataset='digits', train_per_class=40, test_per_class=20, epochs=10, batch_size=32, n_clusters=16,
                       compare_dino=False, show_umap=False),
    'train_all4one': dict(dataset='digits', train_per_class=40, test_per_class=20, epochs=10, batch_size=32, queue_size=256,
                          compare_nnclr=False, compare_barlow=False, show_umap=False),
    'train_jcl': dict(dataset='digits', train_per_class=40, test_per_class=20, epochs=40, batch_size=32, queue_size=256,
                      n_keys=2, compare_mocov2=False, diag_images=16, diag_augs=3, show_umap=False),
    'train_adasim': dict(dataset='digits', train_per_class=40, test_per_class=20, epochs=30, batch_size=32, window=1,
                         topk=3, compare=False, n_queries=2, show_umap=False),
}

POINTS_JS = """() => {
  const r = {panel: 0, live: 0, static: 0, plots: 0};
  for (const d of document.querySelectorAll('.js-plotly-plot')) {
    const n = (d.data || []).reduce((s, t) => s + (t.x ? t.x.length : 0), 0); r.plots += 1;
    if (d.closest('.ssl-train-panel')) r.panel = Math.max(r.panel, n);
    else if (d.closest('.ssl-live')) r.live = Math.max(r.live, n);
    else r.static = Math.max(r.static, n);
  }
  return r;
}"""

def shutdown_kernels(lab):
    "Shut down every kernel of the server, so that one test's kernel does not load the machine during the next."
    import urllib.request
    hdr = {'Authorization': f"token {lab['token']}"}
    with urllib.request.urlopen(urllib.request.Request(f"{lab['url']}/api/kernels", headers=hdr), timeout=30) as r:
        kernels = json.load(r)
    for k in kernels:
        urllib.request.urlopen(urllib.request.Request(f"{lab['url']}/api/kernels/{k['id']}", headers=hdr, method='DELETE'), timeout=60)

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def tiny_copy(name, folder, params):
    "Copy nbs/<name>.ipynb into `folder`, appending `params` to its parameters cell (as papermill would inject them)."
    nb = json.loads((ROOT / 'nbs' / f'{name}.ipynb').read_text())
    cell = next(c for c in nb['cells'] if 'parameters' in c.get('metadata', {}).get('tags', []))
    cell['source'] = ''.join(cell['source']) + '\n' + '\n'.join(f"{k} = {v!r}" for k, v in params.items()) + '\n'
    (folder / f'{name}.ipynb').write_text(json.dumps(nb))

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab server on 127.0.0.1 (random free port, random token) serving a temporary folder."
    folder = tmp_path_factory.mktemp('lab')
    port, token = free_port(), uuid.uuid4().hex
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", OMP_NUM_THREADS='1',
               MKL_NUM_THREADS='1', JUPYTER_CONFIG_DIR=str(folder / '.jupyter'), JUPYTER_RUNTIME_DIR=str(folder / '.runtime'))
    cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}',
           f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={folder}', '--ServerApp.port_retries=0',
           '--LabApp.news_url=None', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate',
           '--LabApp.extension_manager=readonly', f'--LabApp.workspaces_dir={folder / ".workspaces"}',
           f'--LabApp.user_settings_dir={folder / ".settings"}'] + (['--allow-root'] if os.geteuid() == 0 else [])
    log = open(folder / 'jupyterlab.log', 'w')
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        t0 = time.time()
        while time.time() - t0 < 60:
            try:
                with socket.create_connection(('127.0.0.1', port), timeout=1): break
            except OSError: time.sleep(0.5)
            if proc.poll() is not None: pytest.fail(f"JupyterLab exited: {(folder / 'jupyterlab.log').read_text()[-2000:]}")
        else: pytest.fail('JupyterLab did not start within 60 s')
        yield dict(url=f"http://127.0.0.1:{port}", token=token, folder=folder)
    finally:
        proc.terminate()
        try: proc.wait(20)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()

@pytest.fixture(scope='module')
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()

def wait_for(page, fn, timeout, what, every=0.5):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = fn()
        if v: return v
        page.wait_for_timeout(every * 1000)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")

def shot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f'{name}.png'), full_page=False)

def kernel_idle(page):
    return page.locator('.jp-Notebook').count() > 0 and page.evaluate(
        "() => { const s = document.querySelector('.jp-Notebook-ExecutionIndicator, .jp-Toolbar-kernelStatus');"
        " return !!s && !(s.getAttribute('data-status') || s.title || '').toLowerCase().match(/busy|starting|unknown|restarting/); }")

def cells_started(page):
    "Whether any code cell has started executing (its prompt shows [*] or a number)."
    return page.evaluate("() => [...document.querySelectorAll('.jp-Notebook .jp-InputPrompt')]"
                         ".some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))")

def run_all(page, tries=3):
    "Run > Run All Cells; on a loaded machine the first click can land before the menu is ready, so retry until a cell starts."
    for _ in range(tries):
        page.locator('.lm-MenuBar-itemLabel', has_text=re.compile('^Run$')).click(no_wait_after=True)
        page.locator('.lm-Menu-itemLabel', has_text=re.compile('^Run All Cells$')).click(no_wait_after=True)
        t0 = time.time()
        while time.time() - t0 < 30:
            if cells_started(page): return
            page.wait_for_timeout(500)
        page.keyboard.press('Escape')
    pytest.fail(f"Run All did not start any cell after {tries} tries")

def open_notebook(page):
    "Wait for the notebook and its kernel; accept the kernel dialog (Python 3) and dismiss the news toast if shown."
    page.wait_for_selector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook', timeout=180_000)   # a loaded 2-core machine can take minutes
    t0 = time.time()
    while time.time() - t0 < 90:
        dialog = page.locator('.jp-Dialog')
        if dialog.count() and 'kernel' in dialog.inner_text().lower():
            dialog.locator('button.jp-mod-accept').click(no_wait_after=True)
        elif kernel_idle(page) and page.locator('.jp-Dialog').count() == 0: break
        page.wait_for_timeout(500)
    no_news = page.locator('.jp-toast-button', has_text=re.compile('^No$'))
    if no_news.count(): no_news.first.click(no_wait_after=True)
    page.wait_for_timeout(1000)

def scroll_to(page, selector, last=False):
    "Scroll an element into view without Playwright's wait for it to be stable (a live figure never is)."
    page.evaluate("([s, last]) => { const e = document.querySelectorAll(s); const el = e[last ? e.length - 1 : 0];"
                  " if (el) el.scrollIntoView({block: 'start'}); }", [selector, last])

def press(page, panel, label, done, timeout=120, what=''):
    """Click the panel's button `label` by dispatching the click event, and retry until `done()` holds.

    Playwright's own click scrolls the button into view and waits for the page to settle; while a live figure redraws
    on a loaded 2-core machine that wait can outlast its 30 s timeout (CI saw it on train_adasim's Stop). The widget
    listens to the DOM click event, so dispatching it is the same user action without the wait."""
    button, t0, tries = panel.locator('button', has_text=label).first, time.time(), 0
    while time.time() - t0 < timeout:
        if tries == 0 or time.time() - last > 20:
            button.dispatch_event('click', timeout=30_000); tries, last = tries + 1, time.time()
        v = done()
        if v: return v
        page.wait_for_timeout(500)
    pytest.fail(f"timed out after {timeout} s ({tries} clicks on {label}) waiting for {what}")

def panel_input(page, key):
    "The input of the panel knob called `key` (IntText / Text)."
    box = page.locator('.ssl-train-panel .widget-inline-hbox', has=page.locator('label.widget-label', has_text=re.compile(f'^{key}$')))
    return box.locator('input').first

def check_report_offline(browser, report, name):
    "report.html opened from disk with every network request refused: its figure still draws (plotly.js from ../plotly.min.js)."
    page, remote = browser.new_page(viewport={'width': 1400, 'height': 900}), []
    page.route(re.compile(r'^(?!file:)'), lambda route: (remote.append(route.request.url), route.abort()))
    page.goto(report.as_uri())
    page.wait_for_selector('.js-plotly-plot', timeout=30_000)
    n = page.evaluate(POINTS_JS)['static']
    page.screenshot(path=str(ARTIFACTS / f'{name}-0-report-offline.png'))
    page.close()
    assert n > 10 and not remote, (n, remote)
    assert report.stat().st_size < 300_000

@pytest.mark.parametrize('name', list(NOTEBOOKS))
def test_train_notebook_live_in_browser(lab, browser, name):
    try: _live_in_browser(lab, browser, name)
    finally: shutdown_kernels(lab)

def _live_in_browser(lab, browser, name):
    from ssl_workbench.train import train, load_checkpoint
    folder = lab['folder']
    tiny_copy(name, folder, dict(NOTEBOOKS[name], run_dir=f'runs/{name}-main'))
    page = browser.new_page(viewport={'width': 1600, 'height': 1000})
    errors = []
    page.on('pageerror', lambda e: errors.append(str(e)))
    # A workspace of its own, reset: JupyterLab would otherwise restore the earlier tests' notebooks as hidden tabs.
    page.goto(f"{lab['url']}/lab/workspaces/{name}/tree/{name}.ipynb?reset&token={lab['token']}")
    open_notebook(page)
    # --- Run All: the notebook's live figure must gain points while training runs
    run_all(page)
    samples, t0, shots = [], time.time(), 0
    while time.time() - t0 < 240:
        r = page.evaluate(POINTS_JS)
        samples.append((round(time.time() - t0, 2), r['live'], r['static']))
        if r['live'] and shots == 0: scroll_to(page, '.jp-Notebook .ssl-live', last=True)
        if r['live'] > 0 and len({s[1] for s in samples if s[1]}) == 3 and shots == 0:
            shot(page, f'{name}-1-run-all-training'); shots = 1
        if r['static'] > 0 and r['live'] == 0 and kernel_idle(page): break   # only the final static figure: training ended
        page.wait_for_timeout(250)
    else:
        shot(page, f'{name}-failed-run-all'); pytest.fail(f"Run All did not finish in 240 s; samples {samples}")
    scroll_to(page, '.js-plotly-plot', last=True); shot(page, f'{name}-2-run-all-finished')
    live = [s[1] for s in samples if s[1] > 0]
    increases = sum(b > a for a, b in zip(live, live[1:]))
    print(f"{name} Run All: (seconds, live points, static points) {samples}")
    assert increases >= 3, f"the live figure did not grow during training: {samples}"
    assert all(b >= a for a, b in zip(live, live[1:])), samples
    check_report_offline(browser, folder / 'runs' / f'{name}-main' / 'report.html', name)
    # --- the panel: set knobs through its widgets, Start, watch its figure grow, Stop
    panel = page.locator('.ssl-train-panel').first
    scroll_to(page, '.ssl-train-panel')
    epochs = panel_input(page, 'epochs'); epochs.fill('40'); epochs.press('Tab')
    rd = panel_input(page, 'run_dir'); rd.fill(f'runs/{name}-panel'); rd.press('Tab')
    wait_for(page, lambda: 'epochs = 40' in panel.inner_text() and f'{name}-panel' in panel.inner_text(), 10,
             'the resolved configuration to show the new knob values')
    scroll_to(page, '.ssl-train-panel'); shot(page, f'{name}-3-panel-knobs-set')
    press(page, panel, 'Start', lambda: panel.locator('button', has_text='Start').first.is_disabled(), what='the panel run to start')
    grown, t0 = [], time.time()
    while time.time() - t0 < 120:
        n = page.evaluate(POINTS_JS)['panel']
        grown.append(n)
        if sum(b > a for a, b in zip(grown, grown[1:])) >= 3: break
        page.wait_for_timeout(1000)
    else:
        shot(page, f'{name}-failed-panel'); pytest.fail(f"the panel's figure did not grow after Start: {grown}; status {panel.inner_text()[-300:]}")
    scroll_to(page, '.ssl-train-panel .ssl-live'); shot(page, f'{name}-4-panel-training')
    press(page, panel, 'Stop', lambda: re.search(r'interrupted at step \d+', panel.inner_text()), 120, 'the panel run to stop')
    shot(page, f'{name}-5-panel-stopped')
    print(f"{name} panel: points {grown}; status {re.search(r'interrupted at step .*', panel.inner_text())[0]}")
    assert not errors, errors
    page.close()
    # --- the stopped run has a checkpoint from which train(resume=...) continues
    run_dir = folder / 'runs' / f'{name}-panel'
    ck = load_checkpoint(run_dir / 'checkpoints' / 'last.pt')
    cfg = json.loads(ck['config_json'])
    assert cfg['train']['epochs'] == 40 and cfg['train']['dataset'] == 'digits'      # the knobs set in the browser
    stopped_at = ck['step']
    assert 0 < stopped_at < 40 * (cfg['data']['n_train'] // cfg['train']['batch_size'])
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    run = train(resume=str(run_dir), stop_after_epochs=ck['epoch'] + 1, progress=False)
    assert run.history[-1]['step'] > stopped_at and run.status == 'interrupted'
