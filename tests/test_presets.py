"Every preset of every built-in method resolves and builds: configs, the method on a small backbone, its views and optimiser."
import pytest, torch
from ssl_workbench.core import METHOD_NAMES, get_method_class
from ssl_workbench.backbones import make_backbone
from ssl_workbench.train import resolve_configs, build_optimizer

CASES = [(m, p) for m in METHOD_NAMES for p in get_method_class(m).presets]

def test_cases_cover_every_size():
    "The list is not empty by accident: every method has its presets in it, and the sizes the README names exist."
    assert {m for m, _ in CASES} == set(METHOD_NAMES)
    assert len(CASES) >= 2 * len(METHOD_NAMES)

@pytest.mark.parametrize('method,preset', CASES, ids=[f'{m}-{p}' for m, p in CASES])
def test_preset_builds(method, preset):
    tcfg, mcfg = resolve_configs(method, preset)
    M = get_method_class(method)
    size = tcfg.image_size or 32
    torch.manual_seed(0)
    bb = make_backbone('convnet', size)            # the preset's backbone is checked by name; a small one keeps this fast
    m = M(mcfg, bb, batch_size=8, n_train=64)
    specs = m.view_specs(size)
    assert len(specs) >= 2
    opt = build_optimizer(m.param_groups(tcfg.weight_decay), tcfg)
    n_opt = sum(p.numel() for g in opt.param_groups for p in g['params'])
    assert n_opt == sum(p.numel() for p in m.parameters() if p.requires_grad)
    if hasattr(m, 'never_bootstraps'): assert m.never_bootstraps(tcfg.epochs) is None   # AdaSim: the window fits the epochs

def test_adasim_window_longer_than_the_run_is_announced(digits, tmp_path):
    "A run that cannot bootstrap trains the base alone, and says so."
    from ssl_workbench.train import train
    with pytest.warns(UserWarning, match='never bootstraps in a run of epochs=2'):
        r = train('adasim', data=digits, epochs=2, window=2, batch_size=64, progress=False, eval_every=0,
                  eval_at_start=False, run_dir=tmp_path / 'r')
    assert all(e['bootstrap/ratio'] == 0 for e in r.epochs)
