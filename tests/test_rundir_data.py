"""A run directory is data: a module named by a run (and a payload shipped beside it) is never imported, through
`train(resume=...)`, the command line or the viz/linear loaders; a checkpoint outside `<run>/checkpoints/` is refused
and no user file is overwritten."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest
import torch
from conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = "from pathlib import Path\nPath(__file__).with_name('EXECUTED').write_text('payload ran')\nclass Evil: pass\n"

def _poison(run_dir, name='evil'):
    "Rewrite the run's records to name a custom method class `payload:Evil`, and ship payload.py beside them."
    ck_file = run_dir / 'checkpoints' / 'last.pt'
    ck = torch.load(ck_file, weights_only=True)
    conf = json.loads(ck['config_json']); conf.update(method=name, method_class='payload:Evil')
    ck['config_json'] = json.dumps(conf); torch.save(ck, ck_file)
    (run_dir / 'config.json').write_text(json.dumps(conf))
    (run_dir / 'payload.py').write_text(PAYLOAD)

def test_a_payload_in_a_run_directory_never_runs(tmp_path, digits):
    from ssl_workbench.train import train
    from ssl_workbench.core import ConfigError
    from ssl_workbench.viz import load_run_dir
    run = train('simclr', data=digits, run_dir=str(tmp_path / 'r'), stop_after_epochs=1, **TINY)
    d = tmp_path / 'r'
    _poison(d)
    sys.path.insert(0, str(d))
    try:
        with pytest.raises(ConfigError, match='not imported.*method=YourMethod'): train(resume=d, data=digits)
        load_run_dir(d)
    finally: sys.path.remove(str(d))
    env = {**os.environ, 'PYTHONPATH': f"{ROOT}{os.pathsep}{d}"}
    p = subprocess.run([sys.executable, '-m', 'ssl_workbench', 'train', f'resume={d}'], cwd=d, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and 'not imported' in p.stderr, p.stderr[-2000:]
    assert not (d / 'EXECUTED').exists() and 'payload' not in sys.modules
    # a built-in method's run that also names the payload: resumed as the built-in, the payload ignored
    _poison(d, name='simclr')
    resumed = train(resume=d, data=digits)
    assert resumed.status == 'finished' and not (d / 'EXECUTED').exists()

def test_a_checkpoint_copied_elsewhere_is_refused_and_nothing_is_overwritten(tmp_path, digits):
    from ssl_workbench.train import train
    from ssl_workbench.core import ConfigError
    train('simclr', data=digits, run_dir=str(tmp_path / 'r'), stop_after_epochs=1, **TINY)
    mine = tmp_path / 'mine'; (mine / 'backup').mkdir(parents=True)
    shutil.copy(tmp_path / 'r' / 'checkpoints' / 'last.pt', mine / 'backup' / 'a.pt')
    (mine / 'config.json').write_text('my own file'); (mine / 'report.html').write_text('my report')
    with pytest.raises(ConfigError, match="not inside a run directory's checkpoints/ folder"):
        train(resume=mine / 'backup' / 'a.pt', data=digits)
    assert (mine / 'config.json').read_text() == 'my own file' and (mine / 'report.html').read_text() == 'my report'
    assert sorted(p.name for p in mine.iterdir()) == ['backup', 'config.json', 'report.html']

HOLDER = """
import sys, time
from ssl_workbench.train import train
from ssl_workbench.data import load_dataset
class Hold:
    def on_train_start(self, run): print('held', flush=True); time.sleep(600)
train(resume=sys.argv[1], callbacks=[Hold()], data=load_dataset('digits', train_per_class=40), progress=False)
"""

def test_one_writer_per_run_directory_and_a_killed_holder_is_stale(tmp_path, digits):
    "A second process resuming a run that is training is refused, naming the holder; after `kill -9` of the holder its lock is stale and the resume runs."
    from ssl_workbench.train import train
    from ssl_workbench.core import ConfigError
    run_dir = tmp_path / 'run'
    train('nnclr', data=digits, run_dir=str(run_dir), stop_after_epochs=1, **dict(TINY, epochs=3), queue_size=256)
    before = (run_dir / 'metrics.jsonl').read_text()
    p = subprocess.Popen([sys.executable, '-c', HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))
    try:
        assert p.stdout.readline().strip() == 'held'
        with pytest.raises(ConfigError, match=rf"is being trained by process {p.pid} on .*One writer per run directory"):
            train(resume=str(run_dir), data=digits, progress=False)
        with pytest.raises(ConfigError, match=r"already holds a run|is being trained"):    # nor may a new run start there
            train('nnclr', data=digits, run_dir=str(run_dir), **TINY)
    finally:
        p.kill(); p.wait()                       # kill -9: the lock file stays behind, the lock does not
    assert json.loads((run_dir / '.lock').read_text())['pid'] == p.pid
    with pytest.warns(RuntimeWarning, match=rf"took over the stale lock of process {p.pid}"):
        run = train(resume=str(run_dir), data=digits, progress=False)
    assert run.status == 'finished' and not (run_dir / '.lock').exists()
    lines = [json.loads(l) for l in (run_dir / 'metrics.jsonl').read_text().splitlines()]
    assert (run_dir / 'metrics.jsonl').read_text().startswith(before) and lines[-1]['epoch'] == 3
