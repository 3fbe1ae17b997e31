"""The papers' linear read-outs in the trainer: the online linear classifier never changes the method's training (bit
for bit), it is logged as `online/top1`; the offline linear evaluation of a Run and of a run directory; fp16 with loss
scaling trains and resumes exactly."""
import json
import pytest
import torch
from conftest import TINY, METHOD_TINY

def _run(method, tmp_path, name, digits, **kw):
    from ssl_workbench.train import train
    return train(method, data=digits, run_dir=str(tmp_path / name), **{**TINY, **METHOD_TINY.get(method, {}), **kw})

def _steps(run): return [{k: v for k, v in r.items() if not k.startswith(('online/', 'time/'))} for r in run.history if r['kind'] == 'step']

@pytest.mark.parametrize('method,epochs', [('dino', 1), ('adasim', 2)])   # a teacher-evaluated method; AdaSim hooks its encoder too
def test_online_classifier_never_changes_training(method, epochs, tmp_path, digits):
    "Same losses at every logged step and the same weights, queues and caches at the end, with and without the classifier."
    on, off = (_run(method, tmp_path, n, digits, epochs=epochs, online_eval=o) for n, o in (('on', True), ('off', False)))
    assert _steps(on) == _steps(off)
    s_on, s_off = on.method.state_dict(), off.method.state_dict()
    assert s_on.keys() == s_off.keys()
    for k in s_on:
        if torch.is_tensor(s_on[k]): assert torch.equal(s_on[k], s_off[k]), k
    ep = [r for r in on.history if r['kind'] == 'epoch']
    assert all(0 <= r['online/top1'] <= 100 for r in ep) and len(ep) == epochs + 1
    assert all('online/top1' not in r for r in off.history)
    st = [r for r in on.history if r['kind'] == 'step']
    assert all(r['online/train_loss'] > 0 for r in st)

def test_online_classifier_resumes_exactly(tmp_path, digits):
    from ssl_workbench.train import train
    full = _run('simclr', tmp_path, 'full', digits, epochs=2)
    part = _run('simclr', tmp_path, 'part', digits, epochs=2, stop_after_epochs=1)
    resumed = train(resume=part.run_dir, data=digits)
    a = [r.get('online/top1') for r in full.history if r['kind'] == 'epoch']
    b = [r.get('online/top1') for r in resumed.history if r['kind'] == 'epoch']
    assert a == b and a[-1] is not None
    assert torch.equal(full.online.fc.weight, resumed.online.fc.weight)

def test_linear_eval_of_run_and_run_directory(tmp_path, digits):
    from ssl_workbench.linear import linear_eval_run, load_backbone
    run = _run('simclr', tmp_path, 'r', digits, epochs=1)
    a = linear_eval_run(run, epochs=3, batch_size=64, augment=False)
    b = linear_eval_run(run.run_dir, data=digits, epochs=3, batch_size=64, augment=False, device='cpu')
    assert a == b and 20 < a['linear/top1'] <= 100            # the same backbone weights give the same read-out
    bb = load_backbone(run.run_dir)
    assert all(torch.equal(p, q) for p, q in zip(bb.state_dict().values(), run.method.eval_backbones()[''].state_dict().values()))
    (tmp_path / 'r' / 'backbone.json').write_text(json.dumps({'backbone': 'resnet18', 'image_size': 16, 'cifar_stem': True}))
    with pytest.raises(ValueError, match='does not fit a resnet18 backbone'): load_backbone(run.run_dir)
    (tmp_path / 'r' / 'backbone.json').write_text('{"backbone": "evil.module:Payload", "image_size": 16, "cifar_stem": true}')
    with pytest.raises(ValueError, match="is not one of"): load_backbone(run.run_dir)

def test_fp16_with_loss_scaling_trains_and_resumes_exactly(tmp_path):
    "fp16 autocast with a GradScaler (CPU fp16 is slow, so a very small run): scaler state checkpointed, exact resume."
    from ssl_workbench.train import train
    from ssl_workbench.core import ConfigError
    from ssl_workbench.data import load_dataset
    small = load_dataset('digits', train_per_class=10, test_per_class=5)
    kw = dict(data=small, batch_size=32, epochs=2, precision='fp16', progress=False, log_every=1, eval_every=0,
              eval_at_start=False, online_eval=False)
    full = train('simclr', run_dir=str(tmp_path / 'full'), **kw)
    assert full.scaler is not None and full.amp == torch.float16
    ck = torch.load(tmp_path / 'full' / 'checkpoints' / 'last.pt', weights_only=True)
    assert ck['scaler']['scale'] > 0
    part = train('simclr', run_dir=str(tmp_path / 'part'), stop_after_epochs=1, **kw)
    resumed = train(resume=part.run_dir, data=small)
    assert _steps(full) == _steps(resumed)
    with pytest.raises(ConfigError, match="'fp16'"): train('simclr', data=small, precision='half', run_dir=str(tmp_path / 'x'))
