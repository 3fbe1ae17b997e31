"The benchmark command line (`ssl-workbench bench ...`) runs and prints its figures (no timing assertions)."
import subprocess, sys
import pytest
from ssl_workbench.bench_peer import peer_missing

def run(*args):
    p = subprocess.run([sys.executable, '-m', 'ssl_workbench', 'bench', *args], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout

def test_bench_augment_cli():
    out = run('augment', '--batch-size', '32', '--workers', '1', '--seconds', '0.3', '--warmup', '0.1', '--images', '256')
    assert 'ViewMaker on cpu' in out and 'ratio on-device / reference' in out

def test_bench_step_cli():
    for method in ('nnclr', 'excb', 'dino', 'simclr', 'all4one', 'barlow', 'simsiam', 'adasim', 'jcl', 'mocov2'):
        out = run('step', '--method', method, '--backbone', 'convnet', '--preset', 'small', '--batch-size', '16',
                  '--image-size', '16', '--steps', '1', '--warmup', '1')
        assert 'ratio step / backbone passes' in out and method in out
        if method == 'all4one': assert '+ 2 teacher view(s)' in out     # the momentum branch's passes
        if method == 'barlow': assert '+ 0 teacher view(s)' in out

def test_bench_step_sweep_of_jcl_keys():
    out = run('step', '--method', 'jcl', '--backbone', 'convnet', '--preset', 'small', '--batch-size', '16',
              '--image-size', '16', '--steps', '1', '--warmup', '1', '--sweep', 'n_keys=1,2')
    assert 'n_keys sweep' in out and '1 student + 2 teacher view(s)' in out

def test_bench_peer_cli_beside_lightly():
    "Ours and the same step written with lightly, in one run (lightly: `make peer`; CI installs it)."
    if peer_missing(): pytest.skip(peer_missing())
    out = run('peer', '--method', 'all', '--backbone', 'convnet', '--preset', 'small', '--batch-size', '16',
              '--image-size', '16', '--steps', '1', '--warmup', '1', '--set', 'queue_size=64')
    rows = [l.split('|') for l in out.splitlines() if l.count('|') == 3 and 'method' not in l]
    assert [r[0].strip() for r in rows] == ['nnclr', 'dino', 'barlow', 'simsiam', 'mocov2', 'simclr'], out
    assert all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows) and 'bn_splits=1' in out

def test_bench_peer_without_lightly_says_how_to_install_it():
    "With lightly not importable, `bench peer` exits non-zero with a message naming `make peer`."
    code = ("import sys; sys.modules['lightly'] = None; sys.argv = ['ssl-workbench', 'bench', 'peer', '--method', 'nnclr']; "
            "from ssl_workbench.cli import main; main()")
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and 'make peer' in p.stderr and 'pip install lightly' in p.stderr, p.stderr
