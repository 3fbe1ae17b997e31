"""Fault injection: a run killed with SIGKILL (kill -9) at seeded random steps, inside a checkpoint write, or at a random
moment resumes to exactly the uninterrupted run (metrics.jsonl, history and weights); a full disk during a mid-epoch
checkpoint keeps the last good one and says what happened."""
import json, os, random, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch
from conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
KW = dict(TINY, epochs=3, queue_size=256)          # nnclr on 400 digits: 6 steps per epoch, 18 in all

# The child trains and kills itself with SIGKILL at the point it is given: after the log line of step N ('step N'), or
# once the K-th checkpoint write has put B bytes into its temporary file ('write K B'). Nothing is cleaned up.
CHILD = """
import os, signal, sys, torch
from ssl_workbench.train import train
from ssl_workbench.data import load_dataset
run_dir, mode, a, b = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
real_save, writes = torch.save, []
class DiesMidWrite:
    "A file that takes `b` bytes, then the process is killed."
    def __init__(self, f): self.f, self.n = f, 0
    def write(self, data):
        self.n += len(data)
        if self.n > b: self.f.write(bytes(data)[:len(data) - (self.n - b)]); self.f.flush(); os.kill(os.getpid(), signal.SIGKILL)
        return self.f.write(data)
    def __getattr__(self, k): return getattr(self.f, k)
def save(obj, f, *args, **kw):
    if isinstance(obj, dict) and 'config_json' in obj:
        writes.append(1)
        if mode == 'write' and len(writes) == a: f = DiesMidWrite(f)
    return real_save(obj, f, *args, **kw)
torch.save = save
class KillAfterStep:
    def on_log(self, run, r):
        if mode == 'step' and r['step'] >= a: os.kill(os.getpid(), signal.SIGKILL)
kw = dict(epochs=3, batch_size=64, progress=False, log_every=2, eval_every=1, queue_size=256)
print('training', flush=True)
train('nnclr', data=load_dataset('digits', train_per_class=40), run_dir=run_dir, callbacks=[KillAfterStep()], **kw)
"""

def numbers(history): return [{k: v for k, v in r.items() if not k.startswith('time/')} for r in history]

def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) if torch.is_tensor(sa[k]) else sa[k] == sb[k] for k in sa)

def child(run_dir, *args, kill_after=None):
    "Run CHILD; with `kill_after` seconds, SIGKILL it from here at that moment. Returns the return code."
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", OMP_NUM_THREADS='1')
    p = subprocess.Popen([sys.executable, '-c', CHILD, str(run_dir), *map(str, args)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        assert p.stdout.readline().strip() == 'training'
        time.sleep(kill_after); p.kill()
    out, err = p.communicate(timeout=600)
    return p.returncode, err

@pytest.fixture(scope='module', autouse=True)
def one_thread():
    "The child runs with one thread: so do the straight run and the resumes here (float sums depend on the thread count)."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

@pytest.fixture(scope='module')
def straight(tmp_path_factory, digits):
    from ssl_workbench.train import train
    d = tmp_path_factory.mktemp('straight') / 'run'
    run = train('nnclr', data=digits, run_dir=str(d), **KW)
    return run, [json.loads(l) for l in (d / 'metrics.jsonl').read_text().splitlines()]

def check_resume_equals_straight(run_dir, digits, straight):
    from ssl_workbench.train import train
    run = train(resume=str(run_dir), data=digits, progress=False)
    assert run.status == 'finished'
    ref, ref_lines = straight
    assert numbers(run.history) == numbers(ref.history) and same_state(run.method, ref.method)
    lines = [json.loads(l) for l in (run_dir / 'metrics.jsonl').read_text().splitlines()]
    assert numbers(lines) == numbers(ref_lines)                  # records written after the last checkpoint are gone
    assert sorted(p.name for p in (run_dir / 'checkpoints').iterdir()) == ['last.pt'] and not (run_dir / '.lock').exists()

_rng = random.Random(20261203)
STEPS = sorted(_rng.sample(range(7, 18), 2))       # steps after the first epoch's checkpoint (step 6)

@pytest.mark.parametrize('step', STEPS)
def test_killed_at_a_random_step_resumes_exactly(tmp_path, digits, straight, step):
    code, err = child(tmp_path / 'run', 'step', step, 0)
    assert code == -signal.SIGKILL, err[-2000:]
    check_resume_equals_straight(tmp_path / 'run', digits, straight)

def test_killed_inside_a_checkpoint_write_keeps_the_last_good_one(tmp_path, digits, straight):
    "Killed after 4 kB of the second epoch's checkpoint: last.pt is still the first epoch's, and the resume is exact."
    code, err = child(tmp_path / 'run', 'write', 2, 4096)
    assert code == -signal.SIGKILL, err[-2000:]
    ck_dir = tmp_path / 'run' / 'checkpoints'
    assert (ck_dir / 'last.pt.tmp').stat().st_size == 4096 and torch.load(ck_dir / 'last.pt', weights_only=True)['epoch'] == 1
    check_resume_equals_straight(tmp_path / 'run', digits, straight)

def test_killed_inside_the_first_checkpoint_write_says_there_is_nothing_to_resume(tmp_path, digits):
    from ssl_workbench.train import train
    from ssl_workbench.core import ConfigError
    code, err = child(tmp_path / 'run', 'write', 1, 4096)
    assert code == -signal.SIGKILL, err[-2000:]
    with pytest.raises(FileNotFoundError, match=r"stopped before its first checkpoint.*nothing to resume"):
        train(resume=str(tmp_path / 'run'), data=digits)
    with pytest.raises(ConfigError, match=r"an unfinished run with no checkpoint to resume \(delete the folder"):
        train('nnclr', data=digits, run_dir=str(tmp_path / 'run'), **KW)

def test_killed_at_a_random_moment(tmp_path, digits, straight):
    "SIGKILL from outside at a seeded random moment of the run: a resume is exact, or there was no checkpoint yet and the message says so."
    from ssl_workbench.train import train
    t0 = time.time(); child(tmp_path / 'timing', 'none', 0, 0); duration = time.time() - t0
    code, _ = child(tmp_path / 'run', 'none', 0, 0, kill_after=_rng.uniform(0.2, 0.9) * duration)
    if code == 0: return                                           # it finished first: nothing to check
    if (tmp_path / 'run' / 'checkpoints' / 'last.pt').exists(): check_resume_equals_straight(tmp_path / 'run', digits, straight)
    else:
        with pytest.raises(FileNotFoundError, match='nothing to resume'): train(resume=str(tmp_path / 'run'), data=digits)

def test_full_disk_during_a_mid_epoch_checkpoint_keeps_the_last_good_one(tmp_path, digits, straight, monkeypatch):
    "ENOSPC while the stop-request checkpoint at step 10 is written: last.pt stays the epoch-1 one, the error says what happened."
    from ssl_workbench.train import train, CheckpointError
    import ssl_workbench.rundir as R
    real = torch.save
    def full(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get('step') == 10: f.write(b'x' * 100); raise OSError(28, 'No space left on device')
        return real(obj, f, *a, **k)
    class StopAt:
        def on_log(self, run, r):
            if r['step'] == 10: run.request_stop()
    monkeypatch.setattr(torch, 'save', full)
    with pytest.raises(CheckpointError, match=r"could not write the checkpoint .*last\.pt \(\[Errno 28\] No space left on device\); "
                                              r"the previous one there is unchanged.*metrics up to step 10"):
        train('nnclr', data=digits, run_dir=str(tmp_path / 'run'), callbacks=[StopAt()], **KW)
    monkeypatch.setattr(torch, 'save', real)
    ck_dir = tmp_path / 'run' / 'checkpoints'
    assert sorted(p.name for p in ck_dir.iterdir()) == ['last.pt'] and R.load_checkpoint(ck_dir / 'last.pt')['step'] == 6
    check_resume_equals_straight(tmp_path / 'run', digits, straight)
