"A Method subclass defined outside the package trains, resumes and benchmarks like a built-in; teacher methods report both kNNs."
import json
from dataclasses import dataclass
import pytest, torch
from ssl_workbench.core import Config, ConfigError, Method, StepOutput, check_range
from ssl_workbench.blocks import mlp, nnclr_loss
from ssl_workbench.train import train, resolve_configs
from ssl_workbench.bench import bench_step
from conftest import TINY

def make_method_class():
    "A tiny contrastive method whose class lives in a function: it cannot be imported by reference."
    @dataclass
    class TinyCfg(Config):
        dim: int = 16
        tau: float = 0.2
        augment: str = 'cifar'
        def validate(self): check_range('dim', self.dim, 1); check_range('tau', self.tau, 0, lo_open=True)
    class Tiny(Method):
        name, config_class = 'tiny', TinyCfg
        def __init__(self, cfg, backbone, batch_size=256, n_train=None):
            super().__init__(cfg, backbone, batch_size, n_train)
            self.head = mlp([backbone.feat_dim, 32, cfg.dim])
        def training_step(self, batch, progress):
            z1, z2 = (self.head(self.backbone(v)) for v in batch['views'][:2])
            loss = nnclr_loss(z1, z2, self.cfg.tau)
            return StepOutput(loss, {'loss/tiny': loss.detach()}, {})
    return Tiny

def strip(h): return [{k: v for k, v in r.items() if not k.startswith('time/')} for r in h]

def test_custom_method_trains_resumes_and_benchmarks(tmp_path, digits):
    Tiny = make_method_class()
    straight = train(Tiny, data=digits, run_dir=tmp_path / 'a', **TINY)
    assert straight.status == 'finished' and straight.method_name == 'tiny'
    cfg = json.loads((tmp_path / 'a' / 'config.json').read_text())
    assert cfg['method'] == 'tiny' and cfg['method_class'].endswith('make_method_class.<locals>.Tiny')
    assert (tmp_path / 'a' / 'report.html').exists() and 'knn/top1' in straight.history[-1]
    cut = train(Tiny, data=digits, run_dir=tmp_path / 'b', stop_after_epochs=1, **TINY)
    assert cut.status == 'interrupted'
    with pytest.raises(ConfigError, match=r'not built in.*run directory is data.*method=YourMethod'):
        train(resume=tmp_path / 'b', data=digits)
    with pytest.raises(ConfigError, match="trained with method 'tiny', not 'nnclr'"):
        train(resume=tmp_path / 'b', method='nnclr', data=digits)
    resumed = train(resume=tmp_path / 'b', method=Tiny, data=digits)
    assert resumed.status == 'finished' and strip(resumed.history) == strip(straight.history)
    r = bench_step(Tiny, backbone='convnet', batch_size=8, image_size=16, steps=1, warmup=0, verbose=False)
    assert r['step'] > 0 and r['backbone'] > 0
    tcfg, mcfg = resolve_configs(Tiny, dim=8)
    assert mcfg.dim == 8 and tcfg.dataset == 'cifar10_5k'
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \[.dimm.\].*tiny keys: \[.augment., .dim., .tau.\]"):
        resolve_configs(Tiny, dimm=8)

def test_teacher_methods_report_teacher_and_student_knn(tmp_path, digits):
    "DINO and ExCB report kNN of the EMA teacher as knn/top1 (as their papers), the student's beside it; NNCLR only one."
    for method, extra in (('dino', {}), ('excb', {}), ('nnclr', dict(queue_size=256))):
        run = train(method, data=digits, run_dir=tmp_path / method, **{**TINY, 'epochs': 1, **extra})
        last = run.epochs[-1]
        if method == 'nnclr': assert 'knn/top1' in last and 'knn/student_top1' not in last and 'knn/teacher_top1' not in last
        else:
            assert {'knn/top1', 'knn/student_top1'} <= set(last)
            bb = json.loads((tmp_path / method / 'backbone.json').read_text())
            assert bb['weights'] == 'teacher'
            x = run.view_maker.normalize(digits.test_x[:4]); run.method.eval()
            assert torch.allclose(run.method.embed(x), run.method.teacher_backbone(x))

def test_preset_cifar_resolves_resnet18_with_its_k():
    "-p preset cifar in the ExCB notebook must mean the preset's backbone and K, not the small ones."
    tcfg, mcfg = resolve_configs('excb', 'cifar')
    assert tcfg.backbone == 'resnet18' and mcfg.n_clusters == 2048 and tcfg.dataset == 'cifar10'
    tcfg, _ = resolve_configs('excb', 'small')
    assert tcfg.backbone == 'convnet' and tcfg.dataset == 'cifar10_5k'

@pytest.mark.parametrize('returns, match', [
    (lambda loss: loss.item(), r"StepOutput\(loss=\.\.\.\) with a float"),
    (lambda loss: loss.detach(), r"StepOutput\(loss=\.\.\.\) with a tensor without a gradient"),
    (lambda loss: loss.expand(3), r"StepOutput\(loss=\.\.\.\) with a tensor of shape \(3,\)"),
    (lambda loss: {'loss': loss}, r"dict .*it must return StepOutput"),
])
def test_a_bad_training_step_output_names_the_method_and_what_it_returned(tmp_path, digits, returns, match):
    "Your own method's mistakes get named errors before any backward pass, and the run folder is not left blocking its name."
    Tiny = make_method_class()
    class Broken(Tiny):
        def training_step(self, batch, progress):
            out = super().training_step(batch, progress)
            r = returns(out.loss)
            return r if isinstance(r, dict) else StepOutput(r, out.terms, out.stats)
    with pytest.raises(TypeError, match=r"Broken \(method 'tiny'\)\.training_step returned " + match):
        train(Broken, data=digits, run_dir=str(tmp_path / 'r'), **TINY)
    assert not (tmp_path / 'r').exists()
