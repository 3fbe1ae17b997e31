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
    from ssl_workbench.runfiles import load_run_dir
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

def _edit_config(**changes):
    def edit(ck):
        conf = json.loads(ck['config_json'])
        for path, v in changes.items():
            *head, last = path.split('.'); d = conf
            for k in head: d = d[k]
            d[last] = v
        ck['config_json'] = json.dumps(conf)
    return edit

DAMAGED = {   # field edited in the checkpoint -> the field the error must name
    'epoch': (lambda ck: ck.update(epoch=-1), "'epoch' is -1, not an integer ≥ 0"),
    'epoch beyond the run': (lambda ck: ck.update(epoch=99), "'epoch' is 99, more than the run's 3 epochs"),
    'iter beyond the epoch': (lambda ck: ck.update(iter=1000), "'iter' is 1000, but an epoch has 6 steps"),
    'step inconsistent': (lambda ck: ck.update(step=ck['step'] + 1), "'step' is 7, but epoch 1 and iteration 0"),
    'step a float': (lambda ck: ck.update(step=1.5), "'step' is 1.5"),
    'rng_cpu': (lambda ck: ck.update(rng_cpu=torch.zeros(10)), "'rng_cpu' is not a random generator state"),
    'rng_aug': (lambda ck: ck.update(rng_aug=torch.zeros(3, dtype=torch.uint8)), "'rng_aug' does not fit this run's generator"),
    'rng_cuda': (lambda ck: ck.update(rng_cuda='x'), "'rng_cuda' is not a list"),
    'history not JSON': (lambda ck: ck.update(history_json='{oops'), "'history_json' is not JSON text"),
    'history record': (lambda ck: ck.update(history_json=json.dumps([{'epoch': 0}])), "'history_json[0]' is"),
    'partial': (lambda ck: ck.update(partial={'window': 3}), "'partial' is not a mid-epoch record"),
    'method weights': (lambda ck: ck.update(method=[1]), "'method' is not a state dict"),
    'optimizer': (lambda ck: ck.update(optimizer='x'), "'optimizer' is not an optimiser state dict"),
    'online': (lambda ck: ck.update(online='x'), "'online' is str, not a state dict"),
    'train lr': (_edit_config(**{'train.lr': 'x'}), "'config_json.train' does not hold a valid TrainConfig: lr='x' is str"),
    'method key type': (_edit_config(**{'method_config.queue_size': 'big'}), "'config_json.method_config' does not hold a valid NNCLRConfig: queue_size='big'"),
    'method key range': (_edit_config(**{'method_config.temperature': -1.0}), "temperature=-1.0 is out of range"),
    'preset': (_edit_config(preset=3), "'config_json.preset' is 3, not a str"),
    'world size': (_edit_config(world_size='two'), "'config_json.world_size' is 'two'"),
    'data': (_edit_config(data='x'), "'config_json.data' is 'x', not a dict"),
    'data size': (_edit_config(**{'data.n_train': -3}), "'config_json.data.n_train' is -3"),
}

@pytest.fixture(scope='module')
def stopped_run(tmp_path_factory, digits):
    from ssl_workbench.train import train
    d = tmp_path_factory.mktemp('stopped') / 'run'
    train('nnclr', data=digits, run_dir=str(d), stop_after_epochs=1, **dict(TINY, epochs=3), queue_size=256)
    return d

@pytest.mark.parametrize('case', list(DAMAGED))
def test_every_checkpoint_field_is_checked_and_named(tmp_path, digits, stopped_run, case):
    "Each field a resume reads, damaged, is refused with a CheckpointError naming the file and the field; nothing is written."
    from ssl_workbench.train import train, CheckpointError
    edit, expected = DAMAGED[case]
    d = tmp_path / 'run'; shutil.copytree(stopped_run, d)
    ck_file = d / 'checkpoints' / 'last.pt'
    ck = torch.load(ck_file, weights_only=True); edit(ck); torch.save(ck, ck_file)
    before = {p: p.read_bytes() for p in d.rglob('*') if p.is_file()}
    with pytest.raises(CheckpointError) as e: train(resume=d, data=digits, progress=False)
    assert str(ck_file) in str(e.value) and expected in str(e.value), str(e.value)
    assert {p: p.read_bytes() for p in d.rglob('*') if p.is_file()} == before
