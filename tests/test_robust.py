"""Nothing lost, every bad input named (issue 12): run directories, "last good" checkpoints, numeric guards,
checkpoint verification, config types and data loading. Each test injects one fault on a tiny digits run."""
import json, os, shutil, signal, struct, tarfile, threading, zipfile
from dataclasses import replace
from pathlib import Path
import numpy as np
import pytest, torch
from PIL import Image
import ssl_workbench.train as T
from ssl_workbench.train import (train, load_checkpoint, claim_run_dir, CheckpointError, DivergenceError,
                                 NonFiniteLossError)
from ssl_workbench.core import ConfigError, get_method_class
from ssl_workbench.data import load_dataset

TINY = dict(dataset='digits', train_per_class=20, epochs=1, batch_size=32, progress=False, eval_every=0, log_every=2)

def numbers(history):
    return [{k: v for k, v in r.items() if not k.startswith('time/')} for r in history]

def files(d):
    return sorted(str(p.relative_to(d)) for p in Path(d).rglob('*'))

# ---------------------------------------------------------------- run directories

def test_run_dir_dot_with_user_files_is_refused(tmp_path, monkeypatch):
    "run_dir='.' in a folder of the user's: refused before anything is written, the files untouched."
    (tmp_path / 'config.json').write_text('{"mine": 1}'); (tmp_path / 'report.html').write_text('my report')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"run_dir='\.' .* is not empty: it holds an unfinished run.*config\.json"):
        train('nnclr', run_dir='.', **TINY)
    with pytest.raises(ConfigError, match="not empty: it holds files that are not a training run"):
        (tmp_path / 'data.csv').write_text('x'); train('nnclr', run_dir='.', **TINY)
    assert files(tmp_path) == ['config.json', 'data.csv', 'report.html']
    assert (tmp_path / 'config.json').read_text() == '{"mine": 1}'

def test_run_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / 'f').write_text('x')
    with pytest.raises(ConfigError, match='is a file'):
        train('nnclr', run_dir=tmp_path / 'f', **TINY)
    assert (tmp_path / 'f').read_text() == 'x'

def test_default_names_unique_in_the_same_second(tmp_path, monkeypatch):
    "Two runs with default names in one second get two folders, each with its own complete run."
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(T.time, 'strftime', lambda fmt, *a: '20260101-000000')
    a, b = train('nnclr', **TINY), train('nnclr', **TINY)
    assert (a.run_dir.name, b.run_dir.name) == ('nnclr-digits-20260101-000000', 'nnclr-digits-20260101-000000-2')
    for r in (a, b):
        recs = [json.loads(l) for l in (r.run_dir / 'metrics.jsonl').read_text().splitlines()]
        assert recs == r.history and (r.run_dir / 'checkpoints' / 'last.pt').exists()

def test_claims_started_together_never_share(tmp_path):
    "Eight claims of one default name at the same moment: eight folders; an explicit folder claimed twice: refused."
    barrier, got = threading.Barrier(8), []
    def claim():
        barrier.wait(); got.append(claim_run_dir(tmp_path / 'runs' / 'x', unique=True)[0])
    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert len(set(got)) == 8 and all((d / 'config.json').exists() for d in got)
    claim_run_dir(tmp_path / 'mine')
    with pytest.raises(ConfigError, match='not empty'):
        claim_run_dir(tmp_path / 'mine')

def test_failed_start_releases_the_folder(tmp_path):
    "A run that fails while loading its data leaves no half-made folder behind; the same run_dir then works."
    with pytest.raises(FileNotFoundError, match='/no/such/dir'):
        train('nnclr', **{**TINY, 'dataset': 'folder'}, data_path='/no/such/dir', run_dir=tmp_path / 'r')
    assert not (tmp_path / 'r').exists()
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ConfigError, match='batch_size=1000'):
        train('nnclr', run_dir=tmp_path / 'empty', **{**TINY, 'batch_size': 1000})
    assert (tmp_path / 'empty').exists() and files(tmp_path / 'empty') == []
    assert train('nnclr', run_dir=tmp_path / 'r', **TINY).status == 'finished'

def test_unwritable_places_are_named_before_data_loads(tmp_path, monkeypatch):
    "A run folder below a file, a checkpoints folder that refuses writes: the error names the path; no data loaded."
    def no_loading(*a, **k): raise AssertionError('data loaded before the folders were checked')
    monkeypatch.setattr(T, 'load_dataset', no_loading)
    (tmp_path / 'blocker').write_text('a file')
    with pytest.raises(PermissionError, match=r'run_dir .*blocker/r cannot be created'):
        train('nnclr', run_dir=tmp_path / 'blocker' / 'r', **TINY)
    real = Path.write_bytes
    def refuse_in_checkpoints(self, data):
        if self.parent.name == 'checkpoints': raise PermissionError(13, 'Permission denied', str(self))
        return real(self, data)
    monkeypatch.setattr(Path, 'write_bytes', refuse_in_checkpoints)
    with pytest.raises(PermissionError, match=r'the checkpoints folder .*r2/checkpoints cannot be written'):
        train('nnclr', run_dir=tmp_path / 'r2', **TINY)
    assert not (tmp_path / 'r2').exists()

def test_unwritable_checkpoint_names_the_path_and_keeps_the_metrics(tmp_path, monkeypatch):
    "The disk fills up when the epoch's checkpoint is written: the error names the file and the epoch is in metrics.jsonl."
    real = torch.save
    def full_disk(obj, f, *a, **k):
        if isinstance(obj, dict) and 'config_json' in obj: raise OSError(28, 'No space left on device')
        return real(obj, f, *a, **k)
    monkeypatch.setattr(torch, 'save', full_disk)
    d = tmp_path / 'r'
    with pytest.raises(CheckpointError, match=r'could not write the checkpoint .*r/checkpoints/last\.pt.*No space left.*metrics\.jsonl'):
        train('nnclr', run_dir=d, **TINY)
    recs = [json.loads(l) for l in (d / 'metrics.jsonl').read_text().splitlines()]
    assert recs[-1]['kind'] == 'epoch' and recs[-1]['epoch'] == 1
    assert not list((d / 'checkpoints').iterdir())          # no partial .tmp left behind

# ---------------------------------------------------------------- "last good" means good

class _NanGrad(torch.autograd.Function):
    "Zero in the forward pass, NaN gradients in the backward pass: a finite loss with non-finite gradients."
    @staticmethod
    def forward(ctx, w): ctx.shape = w.shape; return w.new_zeros(())
    @staticmethod
    def backward(ctx, g): return torch.full(ctx.shape, float('nan'))

def test_nonfinite_gradients_on_an_epochs_last_step(tmp_path, monkeypatch):
    "Finite loss, NaN gradients on the last step of epoch 2: stops naming the step; epoch 1's checkpoint stays last good."
    M = get_method_class('nnclr')
    orig = M.training_step
    def poisoned(self, batch, progress):
        out = orig(self, batch, progress)
        if progress.step == 2 * progress.steps_per_epoch - 1:
            out.loss = out.loss + _NanGrad.apply(next(self.parameters()))
        return out
    monkeypatch.setattr(M, 'training_step', poisoned)
    with pytest.raises(DivergenceError, match=r'gradients became non-finite at step 11 .*last good checkpoint is .*last\.pt '
                                              r'\(epoch 1, step 6\).*replays the same steps'):
        train('nnclr', run_dir=tmp_path / 'r', **{**TINY, 'epochs': 2})
    ck = load_checkpoint(tmp_path / 'r' / 'checkpoints' / 'last.pt')
    assert (ck['epoch'], ck['step']) == (1, 6)
    assert T.first_nonfinite(ck['method']) is None and T.first_nonfinite(ck['optimizer']['state']) is None

def test_save_checkpoint_refuses_nonfinite_state(tmp_path):
    "save_checkpoint itself never writes NaN, whatever calls it; the file already there is kept."
    run = train('nnclr', run_dir=tmp_path / 'r', **TINY)
    ck_file = tmp_path / 'r' / 'checkpoints' / 'last.pt'
    before = ck_file.read_bytes()
    with torch.no_grad(): next(run.method.parameters())[0].fill_(float('nan'))
    with pytest.raises(DivergenceError, match=r'is not finite at step 6: refusing to write it as a checkpoint .*last\.pt is kept'):
        T.save_checkpoint(ck_file, run, run.optimizer, torch.Generator(), 1, 0, 6)
    assert ck_file.read_bytes() == before

def test_absurd_lr_stops_instead_of_finishing(tmp_path):
    "lr=1e6 used to 'finish' with weights near 1e19; now the run stops at the first logging window naming the steps."
    with pytest.raises(DivergenceError, match=r'weights diverged in steps 0\.\.1: max \|w\| = .* in .*, more than 1000× the '
                                              r'largest weight at the start.*no checkpoint was written'):
        train('nnclr', run_dir=tmp_path / 'r', lr=1e6, **TINY)
    assert not (tmp_path / 'r' / 'checkpoints' / 'last.pt').exists()

def test_exploding_loss_warns(tmp_path, monkeypatch):
    "A finite loss that grows 1e5-fold warns visibly."
    M = get_method_class('nnclr')
    orig = M.training_step
    def growing(self, batch, progress):
        out = orig(self, batch, progress)
        if progress.step >= 2: out.loss = out.loss + 1e5 * (1 + out.loss.detach().abs())   # value only, same gradients
        return out
    monkeypatch.setattr(M, 'training_step', growing)
    with pytest.warns(RuntimeWarning, match='the loss exploded'):
        train('nnclr', run_dir=tmp_path / 'r', **TINY)

def test_sigterm_writes_a_checkpoint_exits_and_resumes_exactly(tmp_path, capsys):
    "SIGTERM mid-epoch: the step finishes, a checkpoint is written, the process exits (143) with a message; resume is exact."
    class TermAt:
        def on_log(self, run, r):
            if r['step'] == 2: os.kill(os.getpid(), signal.SIGTERM)
    straight = train('nnclr', run_dir=tmp_path / 'a', **TINY)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as ex:
        train('nnclr', run_dir=tmp_path / 'b', callbacks=[TermAt()], **TINY)
    assert ex.value.code == 143
    out = capsys.readouterr().out
    assert 'SIGTERM received' in out and "train(resume='" in out
    assert signal.getsignal(signal.SIGTERM) is handler      # handler restored
    ck = load_checkpoint(tmp_path / 'b' / 'checkpoints' / 'last.pt')
    assert (ck['epoch'], ck['iter'], ck['step']) == (0, 2, 2)
    resumed = train(resume=tmp_path / 'b', dataset=None)
    assert numbers(resumed.history) == numbers(straight.history)
    sa, sb = resumed.method.state_dict(), straight.method.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) if torch.is_tensor(sa[k]) else sa[k] == sb[k] for k in sa)

# ---------------------------------------------------------------- checkpoints verified on load

@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
    d = tmp_path_factory.mktemp('ck') / 'run'
    train('nnclr', run_dir=d, **TINY)
    return d

def flip_a_data_byte(f):
    "Flip one byte in the middle of the largest entry's data (not its header): only the CRC-32 can tell."
    with zipfile.ZipFile(f) as z: info = max(z.infolist(), key=lambda i: i.compress_size)
    b = bytearray(f.read_bytes())
    n, m = struct.unpack('<HH', b[info.header_offset + 26:info.header_offset + 30])
    i = info.header_offset + 30 + n + m + info.compress_size // 2
    b[i] ^= 0x55; f.write_bytes(bytes(b))

def _damaged(tmp_path, finished_run, mutate):
    d = tmp_path / 'copy'; shutil.copytree(finished_run, d)
    f = d / 'checkpoints' / 'last.pt'; mutate(f)
    return d

@pytest.mark.parametrize('name, mutate, match', [
    ('empty', lambda f: f.write_bytes(b''), r'last\.pt is empty \(0 bytes\)'),
    ('truncated', lambda f: f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2]), r'last\.pt is damaged or not a PyTorch checkpoint'),
    ('flipped', lambda f: flip_a_data_byte(f),
     r'last\.pt is damaged: its entry .* fails the archive.s CRC-32'),
    ('foreign', lambda f: torch.save({'state_dict': {'w': torch.ones(2)}}, f), r'last\.pt is not an ssl_workbench training checkpoint'),
    ('pickle', lambda f: torch.save({'obj': Path('x')}, f), r'last\.pt holds Python objects .* refusing to unpickle'),
    ('misfit', lambda f: torch.save({**(c := torch.load(f, weights_only=True)), 'method': dict(list(c['method'].items())[1:])}, f),
     r'last\.pt does not fit this nnclr run: .*Missing key'),
    ('nan', lambda f: torch.save({**(c := torch.load(f, weights_only=True)),
                                  'method': {k: v * float('nan') if torch.is_tensor(v) and v.is_floating_point() else v
                                             for k, v in c['method'].items()}}, f),
     r'last\.pt holds non-finite values'),
])
def test_damaged_checkpoints_are_named(tmp_path, finished_run, name, mutate, match):
    d = _damaged(tmp_path, finished_run, mutate)
    with pytest.raises(CheckpointError, match=match):
        train(resume=d)

def test_resume_checks_method_and_data(tmp_path, finished_run):
    d = _damaged(tmp_path, finished_run, lambda f: None)
    with pytest.raises(ConfigError, match="trained with method 'nnclr', not 'dino'"):
        train(resume=d, method='dino')
    other = load_dataset('digits', train_per_class=30)
    with pytest.raises(ConfigError, match=r'not the data this run was trained on \(n_train 200 then, 300 now'):
        train(resume=d, data=other)

# ---------------------------------------------------------------- config types

@pytest.mark.parametrize('bad, match', [
    (dict(lr='0.1'), r"lr='0\.1' is str, not a finite number; write lr=0\.1"),
    (dict(batch_size=64.5), r'batch_size=64\.5 is float, not an integer'),
    (dict(epochs=True), r'epochs=True is bool, not an integer'),
    (dict(weight_decay=float('nan')), r'weight_decay=nan is not allowed'),
    (dict(grad_clip='1'), r"grad_clip='1' is str, not a finite number \(or None\)"),
    (dict(progress='no'), r"progress='no' is str, not True or False"),
    (dict(queue_size=256.0), r'queue_size=256\.0 is float, not an integer'),
    (dict(temperature='0.1'), r"temperature='0\.1' is str"),
    (dict(seed=-1), r'seed=-1 is out of range; allowed: \[0, 4294967295\]'),
])
def test_config_types_are_checked_with_the_key(tmp_path, bad, match):
    with pytest.raises(ConfigError, match=match):
        train('nnclr', run_dir=tmp_path / 'r', **{**TINY, **bad})
    assert not (tmp_path / 'r').exists()

def test_numpy_numbers_are_accepted_and_written(tmp_path):
    run = train('nnclr', run_dir=tmp_path / 'r', **{**TINY, 'batch_size': np.int64(32), 'lr': np.float32(0.25)})
    cfg = json.loads((tmp_path / 'r' / 'config.json').read_text())
    assert cfg['train']['batch_size'] == 32 and cfg['train']['lr'] == 0.25 and run.status == 'finished'

def test_train_arguments_are_checked(tmp_path):
    with pytest.raises(ConfigError, match=r'stop_after_epochs=1\.5 is float'):
        train('nnclr', run_dir=tmp_path / 'r', stop_after_epochs=1.5, **TINY)
    with pytest.raises(ConfigError, match='data= must be an ssl_workbench.data.ImageData'):
        train('nnclr', run_dir=tmp_path / 'r', data=np.zeros(3), **TINY)
    class Count:
        n = 0
        def on_log(self, run, r): Count.n += 1
    train('nnclr', run_dir=tmp_path / 'r', callbacks=Count(), **TINY)        # one callback, not in a list
    assert Count.n == 3

# ---------------------------------------------------------------- data errors name the file

def _tree(base, classes=('a', 'b'), n=2, fmt='PNG'):
    for split in ('train', 'test'):
        for ci, c in enumerate(classes):
            (base / split / c).mkdir(parents=True, exist_ok=True)
            for j in range(n):
                Image.new('RGB', (8, 8), (60 * ci, 20 * j, 9)).save(base / split / c / f'{j}.{fmt.lower()}', fmt)
    return base

def test_corrupt_jpeg_in_a_folder_is_named(tmp_path):
    t = _tree(tmp_path / 't', fmt='JPEG')
    f = t / 'train' / 'b' / '1.jpeg'; f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2])
    with pytest.raises(ValueError, match=r'cannot decode the image train/b/1\.jpeg in .*/t .*replace or remove it'):
        load_dataset('folder', t, root=tmp_path / 'root')

def test_corrupt_png_in_a_tar_is_named(tmp_path):
    t = _tree(tmp_path / 't')
    (t / 'test' / 'a' / '0.png').write_bytes(b'\x89PNG\r\n\x1a\n garbage')
    with tarfile.open(tmp_path / 't.tar.gz', 'w:gz') as tf: tf.add(t, arcname='.')
    with pytest.raises(ValueError, match=r'cannot decode the image test/a/0\.png in .*t\.tar\.gz'):
        load_dataset('folder', tmp_path / 't.tar.gz', root=tmp_path / 'root')

def test_truncated_archive_is_named(tmp_path):
    t = _tree(tmp_path / 't', n=20)
    with tarfile.open(tmp_path / 't.tar.gz', 'w:gz') as tf: tf.add(t, arcname='.')
    b = (tmp_path / 't.tar.gz').read_bytes(); (tmp_path / 't.tar.gz').write_bytes(b[:len(b) * 2 // 3])
    with pytest.raises(ValueError, match=r't\.tar\.gz (is damaged or cut short|is neither a directory nor a tar archive \(or it is damaged\))'):
        load_dataset('folder', tmp_path / 't.tar.gz', root=tmp_path / 'root')

def test_npz_length_mismatch_and_bad_labels(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (60, 8, 8), dtype=np.uint8)
    y = np.repeat(np.arange(2), 30)
    np.savez(tmp_path / 'm.npz', x=x, y=y[:50])
    with pytest.raises(ValueError, match=r'm\.npz: x has 60 images but y has 50 labels'):
        load_dataset('npz', tmp_path / 'm.npz', root=tmp_path)
    np.savez(tmp_path / 'neg.npz', x=x, y=y - 1)
    with pytest.raises(ValueError, match=r'neg\.npz: train labels must be class indices in 0\.\.0 .*found \[-1\]'):
        load_dataset('npz', tmp_path / 'neg.npz', root=tmp_path)
    np.savez(tmp_path / 'oor.npz', x=x, y=y * 5, classes=np.array(['cat', 'dog']))
    with pytest.raises(ValueError, match=r'oor\.npz: train labels must be class indices in 0\.\.1 .*found \[5\]'):
        load_dataset('npz', tmp_path / 'oor.npz', root=tmp_path)
    np.savez(tmp_path / 'one.npz', x=x, y=np.zeros(60, int))
    with pytest.raises(ValueError, match='two classes or more'):
        load_dataset('npz', tmp_path / 'one.npz', root=tmp_path)

def test_bad_labels_refused_before_training(tmp_path):
    "An ImageData with label -1 handed to train: refused at load with a message, not a crash inside kNN; nothing left behind."
    d = load_dataset('digits', train_per_class=20)
    bad = replace(d, test_y=d.test_y.clone().index_fill_(0, torch.tensor([3]), -1))
    with pytest.raises(ValueError, match=r'test labels must be class indices in 0\.\.9 .*found \[-1\]'):
        train('nnclr', run_dir=tmp_path / 'r', data=bad, **TINY)
    assert not (tmp_path / 'r').exists()

def test_image_modes_and_bit_depths(tmp_path):
    "16-bit grey scaled (not clipped), palette and grey converted, transparent pixels on white."
    t = _tree(tmp_path / 't')
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(t / 'train' / 'a' / '0.png')
    Image.new('RGBA', (8, 8), (10, 20, 30, 0)).save(t / 'train' / 'a' / '1.png')
    Image.new('RGB', (8, 8), (200, 100, 50)).convert('P', palette=Image.Palette.ADAPTIVE).save(t / 'train' / 'b' / '0.png')
    Image.new('L', (8, 8), 77).save(t / 'train' / 'b' / '1.png')
    d = load_dataset('folder', t, root=tmp_path / 'root')
    assert d.train_x[:, :, 0, 0].tolist() == [[156] * 3, [255] * 3, [200, 100, 50], [77] * 3]

def test_cache_notices_changed_files_and_warns_when_unwritable(tmp_path):
    t = _tree(tmp_path / 't')
    first = load_dataset('folder', t, root=tmp_path / 'root')
    f = t / 'train' / 'a' / '0.png'; mt = (t / 'train' / 'a').stat().st_mtime_ns
    Image.new('RGB', (8, 8), (1, 2, 3)).save(f); os.utime(t / 'train' / 'a', ns=(mt, mt))
    again = load_dataset('folder', t, root=tmp_path / 'root')
    assert first.train_x[0, :, 0, 0].tolist() != [1, 2, 3] and again.train_x[0, :, 0, 0].tolist() == [1, 2, 3]
    (tmp_path / 'ro').mkdir(); (tmp_path / 'ro' / 'cache').write_text('not a folder')
    with pytest.warns(UserWarning, match=r'could not write the dataset cache .*ro/cache'):
        assert load_dataset('folder', t, root=tmp_path / 'ro').n_train == 4
