"The benchmark command line runs and prints its figures (no timing assertions)."
import subprocess, sys

def run(*args):
    p = subprocess.run([sys.executable, '-m', 'ssl_workbench.bench', *args], capture_output=True, text=True, timeout=300)
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
