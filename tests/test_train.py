"Trainer behaviour: exact resume, interrupts, non-finite losses, checkpoints, exports, bad inputs."
import json, shutil
import pytest, torch, torchvision
from ssl_workbench.train import train, NonFiniteLossError, load_checkpoint
from ssl_workbench.core import ConfigError, METHOD_NAMES, get_method_class
from ssl_workbench.backbones import cifar_stem_
from conftest import TINY, METHOD_TINY

def numbers(history):
    "History without wall-clock timings."
    return [{k: v for k, v in r.items() if not k.startswith('time/')} for r in history]

def kw(method='nnclr', **extra): return {**TINY, **METHOD_TINY.get(method, {}), **extra}

def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) if torch.is_tensor(sa[k]) else sa[k] == sb[k] for k in sa)

@pytest.mark.parametrize('method', METHOD_NAMES)
def test_resume_exact(tmp_path, digits, method):
    "2 epochs straight == 1 epoch, stop, resume for 1 more: identical metrics and weights on CPU."
    straight = train(method, data=digits, run_dir=tmp_path / 'a', **kw(method))
    first = train(method, data=digits, run_dir=tmp_path / 'b', stop_after_epochs=1, **kw(method))
    assert first.status == 'interrupted' and len(first.epochs) == 2   # epoch 0 (init eval) + epoch 1
    resumed = train(resume=tmp_path / 'b', data=digits)
    assert resumed.status == 'finished'
    assert numbers(resumed.history) == numbers(straight.history)
    assert same_state(resumed.method, straight.method)

def test_interrupt_mid_epoch_and_resume(tmp_path, digits):
    "A stop request mid-epoch writes a checkpoint at that step; resuming replays the rest exactly."
    class StopAt:
        def on_log(self, run, r):
            if r['step'] == 4: run.request_stop()
    straight = train('nnclr', data=digits, run_dir=tmp_path / 'a', **kw())
    cut = train('nnclr', data=digits, run_dir=tmp_path / 'b', callbacks=[StopAt()], **kw())
    assert cut.status == 'interrupted'
    ck = load_checkpoint(tmp_path / 'b' / 'checkpoints' / 'last.pt')
    assert (ck['epoch'], ck['iter'], ck['step']) == (0, 4, 4)
    resumed = train(resume=tmp_path / 'b', data=digits)
    assert numbers(resumed.history) == numbers(straight.history)
    assert same_state(resumed.method, straight.method)

def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, digits, monkeypatch):
    M = get_method_class('nnclr')
    orig = M.training_step
    def poisoned(self, batch, progress):
        out = orig(self, batch, progress)
        if progress.step == 8: out.loss = out.loss * float('nan')
        return out
    monkeypatch.setattr(M, 'training_step', poisoned)
    saved = {}
    class Snapshot:
        def on_epoch_end(self, run, r): saved.update(load_checkpoint(run.run_dir / 'checkpoints' / 'last.pt'))
    with pytest.raises(NonFiniteLossError, match=r'loss is nan at epoch 1 step 8.*resume'):
        train('nnclr', data=digits, run_dir=tmp_path / 'r', callbacks=[Snapshot()], **kw())
    ck = load_checkpoint(tmp_path / 'r' / 'checkpoints' / 'last.pt')
    assert ck['epoch'] == 1 and ck['step'] == 6
    assert all(torch.equal(ck['method'][k], saved['method'][k]) for k in ck['method'] if torch.is_tensor(ck['method'][k]))
    assert all(torch.isfinite(v).all() for v in ck['method'].values() if torch.is_tensor(v) and v.is_floating_point())

def test_run_directory_and_backbone_export(tmp_path, digits):
    run = train('nnclr', data=digits, run_dir=tmp_path / 'r', backbone='resnet18', **kw(epochs=1))
    d = tmp_path / 'r'
    for f in ('config.json', 'metrics.jsonl', 'checkpoints/last.pt', 'backbone.pt', 'report.html'): assert (d / f).exists(), f
    recs = [json.loads(l) for l in (d / 'metrics.jsonl').read_text().splitlines()]
    assert recs == run.history and all({'kind', 'epoch', 'step'} <= set(r) for r in recs)
    assert {'loss/total', 'loss/nnclr', 'nn/acc', 'nn/self_hit', 'lr'} <= set(recs[1])
    assert 'knn/top1' in recs[-1] and recs[-1]['kind'] == 'epoch'
    cfg = json.loads((d / 'config.json').read_text())
    assert cfg['method'] == 'nnclr' and cfg['train']['backbone'] == 'resnet18' and cfg['method_config']['queue_size'] == 256
    ck = torch.load(d / 'checkpoints' / 'last.pt', weights_only=True)
    assert 'queue._extra_state' in ck['method'] or any('queue' in k for k in ck['method'])
    plain = cifar_stem_(torchvision.models.resnet18()); plain.fc = torch.nn.Identity()
    plain.load_state_dict(torch.load(d / 'backbone.pt', weights_only=True))
    plain.eval(); run.method.eval()
    x = run.view_maker.normalize(digits.test_x[:4])
    assert torch.allclose(plain(x), run.method.embed(x), atol=1e-5)
    acc = run.linear_probe(max_iter=200)
    assert 0 <= acc <= 100

def test_labels_never_change_the_loss(tmp_path, digits):
    "Shuffled labels: every loss value identical, only label-based monitoring changes."
    from dataclasses import replace
    g = torch.Generator().manual_seed(1)
    shuffled = replace(digits, train_y=digits.train_y[torch.randperm(len(digits.train_y), generator=g)])
    for method in METHOD_NAMES:
        a = train(method, data=digits, run_dir=tmp_path / f'{method}a', **kw(method, epochs=1, eval_every=0))
        b = train(method, data=shuffled, run_dir=tmp_path / f'{method}b', **kw(method, epochs=1, eval_every=0))
        la = [r['loss/total'] for r in a.steps]; lb = [r['loss/total'] for r in b.steps]
        assert la == lb, method
        pa, pb = dict(a.method.named_parameters()), dict(b.method.named_parameters())
        assert all(torch.equal(pa[k], pb[k]) for k in pa), method    # buffers may hold labels for monitoring

@pytest.mark.parametrize('call, match', [
    (lambda d, p: train('byol', data=d), "choose one of \\['nnclr'"),
    (lambda d, p: train('nnclr', dataset='imagenet'), "choose one of \\['cifar10_5k', 'digits'"),
    (lambda d, p: train('nnclr', data=d, quue_size=64), "unknown key.*train keys"),
    (lambda d, p: train('nnclr', data=d, preset='huge'), "preset='huge'.*'small'"),
    (lambda d, p: train('nnclr', data=d, run_dir=p, **kw(queue_size=100)), "multiple of the batch size 64"),
    (lambda d, p: train('nnclr', data=d, run_dir=p, **kw(batch_size=1024)), "larger than the 400 training images"),
    (lambda d, p: train('nnclr', data=d, run_dir=p, **kw(knn_k=1000)), "knn_k=1000"),
    (lambda d, p: train('nnclr', dataset='folder', data_path='/no/such/dir', run_dir=p), "/no/such/dir"),
    (lambda d, p: train('nnclr', data=d, device='tpu'), "'auto', 'cpu'"),
    (lambda d, p: train('nnclr', data=d, lr=-1.0), "lr=-1.0 is out of range"),
    (lambda d, p: train(resume=p / 'nothing'), "no checkpoint"),
])
def test_bad_inputs(tmp_path, digits, call, match):
    with pytest.raises((ConfigError, FileNotFoundError, ValueError), match=match):
        call(digits, tmp_path / 'r')

def test_no_silent_overwrite_and_resume_rules(tmp_path, digits):
    train('nnclr', data=digits, run_dir=tmp_path / 'r', **kw(epochs=1, eval_every=0))
    with pytest.raises(ConfigError, match='already holds a run'):
        train('nnclr', data=digits, run_dir=tmp_path / 'r', **kw(epochs=1))
    with pytest.raises(ConfigError, match='cannot change on resume'):
        train(resume=tmp_path / 'r', data=digits, lr=0.1)
