"""scripts/gpu_check.py (issue 21) cannot rot: its CPU dry run writes every section, with figures or a recorded reason.

The GPU figures themselves need a GPU; here every path that is not CUDA-only runs at tiny sizes, and every number the
JSON holds must be finite, and every time, rate or ratio positive.
"""
import importlib.util, json, math, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'scripts' / 'gpu_check.py'
SECTIONS = ('step', 'gpu', 'host_sync', 'decode', 'epoch', 'compile')
POSITIVE = ('step', 'backbone', 'ratio', 'ours', 'lightly', 'images_per_s', 'epoch_s', 'seconds', 'call_s', 'speedup')

def run(*args, timeout=400):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)

def numbers(x, path=''):
    "(path, value) of every number or string in nested dicts / lists."
    if isinstance(x, dict):
        for k, v in x.items(): yield from numbers(v, f'{path}.{k}')
    elif isinstance(x, list):
        for i, v in enumerate(x): yield from numbers(v, f'{path}[{i}]')
    elif isinstance(x, (int, float, str)) and not isinstance(x, bool): yield path, x

def outcome(item):
    "'figures', 'skipped' or 'error' of one item (a method's row, a decode entry, an epoch feed)."
    if 'error' in item: return 'error'
    if 'skipped' in item and len(item) == 1: return 'skipped'
    return 'figures'

@pytest.fixture(scope='module')
def dry(tmp_path_factory):
    out = tmp_path_factory.mktemp('gpu_check') / 'dry.json'
    p = run('--dry-run', '--out', str(out), '--budget', '240')
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(out.read_text()), p.stdout, p.stderr

def test_every_section_has_figures_or_a_reason(dry):
    res, _, _ = dry
    assert res['dry_run'] and res['finished'] and res['aborted'] is None
    S = res['sections']
    assert set(SECTIONS) <= set(S)
    for name in SECTIONS:
        s = S[name]
        assert 'error' not in s, (name, s['error'])
        assert s.get('status') in ('ok', 'partial', 'skipped'), (name, s.get('status'))
        if s['status'] == 'skipped': assert len(s.get('reason', '')) > 10, name
    # CUDA-only parts are skipped with their reason on the CPU; the rest ran
    assert S['gpu']['status'] == 'skipped' and 'CUDA' in S['gpu']['reason']
    assert S['host_sync']['status'] == 'skipped' and 'CUDA' in S['host_sync']['reason']
    assert S['step']['status'] == 'ok' and S['decode']['status'] == 'ok' and S['epoch']['status'] == 'ok'

def test_no_errors_and_every_item_accounted_for(dry):
    res, _, _ = dry
    S = res['sections']
    from ssl_workbench.core import METHOD_NAMES
    from ssl_workbench.bench import PEER_METHODS
    rows = S['step']['methods']
    assert list(rows) == list(METHOD_NAMES)
    for m, row in rows.items():
        assert outcome(row) != 'error', (m, row)
        if outcome(row) == 'skipped': assert 'budget' in row['skipped']; continue
        assert 'ours' in row and {'step', 'backbone', 'ratio'} <= set(row['ours'])
        peer = row['peer']
        assert outcome(peer) != 'error', (m, peer)
        if m not in PEER_METHODS: assert 'no lightly peer' in peer['skipped']
    assert sum('ours' in r for r in rows.values()) >= 2                  # figures, not only skips
    assert any('lightly' in r.get('peer', {}) for r in rows.values()) or all(
        'not installed' in r['peer'].get('skipped', '') for r in rows.values() if r.get('peer') and 'lightly' not in r['peer'])
    for m, row in S['host_sync']['methods'].items(): assert outcome(row) != 'error', (m, row)
    assert 'result' in S['host_sync']['methods']['nnclr']                  # the steps ran without the monitor
    for k in ('source', 'encoded_224'):
        assert S['decode'][k]['cpu']['images_per_s'] > 0 and 'CUDA' in S['decode'][k]['cuda']['skipped']
    assert S['decode']['diskimages']['result']['images_per_s'] > 0
    ep = S['epoch']['methods']
    assert list(ep) == ['nnclr', 'excb', 'dino']
    assert 'images_per_s' in ep['nnclr']['resident'] and 'images_per_s' in ep['nnclr']['dataloader']
    for m, row in ep.items():
        for feed in ('resident', 'dataloader'): assert outcome(row[feed]) != 'error', (m, feed, row[feed])
    tc = S['epoch']['train_call']
    assert 'error' not in tc and ('result' in tc or 'budget' in tc.get('skipped', ''))
    assert 'step' in S['compile']['eager'] and 'error' not in S['compile'].get('compiled', {})

def test_numbers_are_finite_and_positive(dry):
    res, _, _ = dry
    seen = 0
    for path, v in numbers(res['sections']):
        assert not (isinstance(v, str) and v in ('nan', 'inf', '-inf')), f'{path} is {v}'
        if isinstance(v, (int, float)):
            assert math.isfinite(v), path
            if path.rsplit('.', 1)[-1] in POSITIVE: assert v > 0, f'{path} = {v}'; seen += 1
    assert seen >= 20, seen

def test_table_printed_and_reproducible(dry, tmp_path):
    res, out, _ = dry
    assert '| method | step ms | backbone ms | ratio |' in out and 'DRY RUN' in out
    assert '| nnclr |' in out and 'decode_jpeg' in out and 'torch.compile' in out
    assert res['table_md'] in out
    f = tmp_path / 'r.json'; f.write_text(json.dumps(res))
    p = run('--table-from', str(f), timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == res['table_md'].strip()

def _module():
    spec = importlib.util.spec_from_file_location('gpu_check', SCRIPT)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod

def test_util_sampler_and_budget():
    import time
    g = _module()
    vals = iter([(10.0, 100.0), (30.0, 300.0)] + [(20.0, 200.0)] * 1000)
    s = g.UtilSampler(lambda: next(vals), interval=0.01)
    with s: time.sleep(0.2)
    r = s.summary()
    assert r['util_samples'] >= 3 and r['util_max_pct'] == 30.0 and r['nvml_mem_used_max_mib'] == 300.0
    assert 10.0 < r['util_mean_pct'] < 30.0
    assert g.UtilSampler.for_device('cpu') == (None, 'no CUDA device (device cpu)')
    b = g.Budget(100.0, ['step', 'epoch'])                      # shares 0.30 and 0.33: step gets 30/63 of 100 s
    assert abs(b.start('step') - 100 * 0.30 / 0.63) < 1
    b.section_end = time.monotonic()                           # step used nothing more: epoch gets all that is left
    assert abs(b.start('epoch') - 100) < 1
    assert g.clean({'a': float('nan'), 'b': [1.5, float('inf')]}) == {'a': 'nan', 'b': [1.5, 'inf']}

def test_hard_limit_still_writes_the_json(tmp_path):
    out = tmp_path / 'cut.json'
    p = run('--dry-run', '--out', str(out), '--sections', 'step', '--steps', '200', '--hard-limit', '12', timeout=200)
    assert p.returncode == 3, (p.returncode, p.stderr[-2000:])
    res = json.loads(out.read_text())
    assert res['aborted'].startswith('hard limit') and 'table_md' in res and 'GPU check' in p.stdout

def test_bad_arguments_are_refused():
    p = run('--dry-run', '--sections', 'step,warp', timeout=120)
    assert p.returncode != 0 and "section='warp' is not allowed" in p.stderr
    p = run('--dry-run', '--methods', 'nnclr,byol', timeout=120)
    assert p.returncode != 0 and "method='byol' is not allowed" in p.stderr

def test_table_of_a_cuda_shaped_result(dry):
    "The table of a GPU run's JSON (its CUDA-only fields put into the dry run's) shows memory, utilisation and the sync check."
    res = json.loads(json.dumps(dry[0]))
    S = res['sections']
    res['env']['device_name'], res['dry_run'] = 'NVIDIA H200', False
    S['gpu']['per_method']['nnclr'] = dict(max_allocated_gib=1.5, max_reserved_gib=2.0, util_mean_pct=80.0)
    S['epoch']['methods']['dino']['resident'].update(util_mean_pct=91.0, partial=True)
    S['host_sync'] = dict(status='ok', methods_checked=2, **{'pass': False}, methods=dict(
        nnclr=dict(result=dict(step_pass=True, step_syncs=0, batch_syncs=3)),
        dino=dict(result=dict(step_pass=False, step_syncs=1, batch_syncs=3, step_first=['x/dino.py:12', 'called a synchronizing CUDA operation']))))
    t = _module().table(res)
    assert 'NVIDIA H200' in t and 'DRY RUN' not in t
    assert '| nnclr | ' in t and '| 1.50 |' in t
    dino = next(l for l in t.splitlines() if l.startswith('| dino |') and '*' in l)
    assert '| 91 |' in dino
    assert 'host sync in the step: FAIL (2 methods checked)' in t and 'x/dino.py:12' in t and 'make_batch syncs over all methods: 6' in t
