"The experiment notebooks run headless with papermill at tiny parameters and keep their plots and results."
import json, os
from pathlib import Path
import pytest
import papermill as pm

ROOT = Path(__file__).resolve().parents[1]
PLOTLY = 'application/vnd.plotly.v1+json'

def outputs(nb):
    return [o for c in nb['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', [])]

def run_notebook(name, tmp_path, **params):
    out = tmp_path / f'{name}.out.ipynb'
    pm.execute_notebook(str(ROOT / 'nbs' / f'{name}.ipynb'), str(out), parameters=params, kernel_name='python3',
                        cwd=str(tmp_path), progress_bar=False)
    return json.loads(out.read_text()), out

def train_cell_outputs(nb, call):
    "Outputs of the code cell that contains `call` (e.g. \"train('nnclr'\")."
    return next(c['outputs'] for c in nb['cells'] if c['cell_type'] == 'code' and call in ''.join(c['source']))

def check_headless(nb, out, call, run_dir, n_epochs, prefix=''):
    "The train cell ends with a static plotly figure of the whole run; widget state stays small; run files exist."
    outs = train_cell_outputs(nb, call)
    assert PLOTLY in outs[-1].get('data', {}), 'the train cell does not end with a static plotly figure'
    fig = outs[-1]['data'][PLOTLY]
    names = {t.get('name') for t in fig['data']}
    assert {prefix + k for k in ('loss/total', 'knn/top1', 'lr')} <= names, names
    knn = next(t for t in fig['data'] if t.get('name') == prefix + 'knn/top1')
    assert len(knn['y']) == n_epochs + 1     # initialisation + every epoch: the final state, not a first empty figure
    widgets = json.dumps(nb['metadata'].get('widgets', {}))
    assert len(widgets) < 300_000, f"widget state is {len(widgets)} bytes"
    assert PLOTLY not in widgets             # the live figure was cleared from the widget state at the end
    assert out.stat().st_size < 3_000_000
    for f in ('config.json', 'metrics.jsonl', 'checkpoints/last.pt', 'backbone.pt', 'report.html'):
        assert (run_dir / f).exists(), f
    report = (run_dir / 'report.html').read_text()
    assert (run_dir / 'report.html').stat().st_size < 300_000 and "src='../plotly.min.js'" in report
    assert (run_dir.parent / 'plotly.min.js').exists()
    return fig

def test_train_nnclr_headless(tmp_path):
    run_dir = tmp_path / 'runs' / 'run'
    nb, out = run_notebook('train_nnclr', tmp_path, dataset='digits', epochs=2, train_per_class=40, batch_size=64,
                           queue_size=256, run_dir=str(run_dir), show_umap=False)
    fig = check_headless(nb, out, "train('nnclr'", run_dir, 2)
    assert {'nn/acc', 'z/std', 'loss/nnclr'} <= {t.get('name') for t in fig['data']}
    text = ''.join(''.join(o.get('text', '')) for o in outputs(nb))
    assert 'resolved configuration: nnclr' in text and 'queue_size=256*' in text
    tables = [o for o in outputs(nb) if 'text/markdown' in o.get('data', {}) and '| run |' in ''.join(o['data']['text/markdown'])]
    assert tables and 'knn/top1' in ''.join(tables[0]['data']['text/markdown'])

def test_train_excb_headless_compares_dino(tmp_path):
    "train_excb keeps both runs' cluster diagnostics (Fig. 5 sizes included): the side-by-side figure and the table rows."
    run_dir = tmp_path / 'runs' / 'run'
    nb, out = run_notebook('train_excb', tmp_path, dataset='digits', epochs=1, train_per_class=20, batch_size=64,
                           n_clusters=16, eval_every=1, show_umap=False, run_dir=str(run_dir))
    check_headless(nb, out, "excb = train('excb'", run_dir, 1)
    fig = check_headless(nb, out, "runs['dino'] = train('dino'", tmp_path / 'runs' / 'run-dino', 1, prefix='dino: ')
    names = {t.get('name', '') for t in fig['data']}
    assert {'excb: clusters/min_rel', 'dino: clusters/max_rel'} <= names
    assert any(n.startswith('excb (') and 'empty)' in n for n in names) and any(n.startswith('dino (') for n in names)
    dino_cfg = json.loads((tmp_path / 'runs' / 'run-dino' / 'config.json').read_text())
    assert dino_cfg['method_config']['out_dim'] == 16                  # the same K as ExCB
    table = next(''.join(o['data']['text/markdown']) for o in outputs(nb) if 'text/markdown' in o.get('data', {}))
    assert '| excb |' in table and '| dino |' in table and 'clusters/empty' in table

def notebook_namespace(name, **params):
    "Run a train notebook's parameters cell, then `params` (as papermill injects them), then its configuration cell."
    nb = json.loads((ROOT / 'nbs' / f'{name}.ipynb').read_text())
    code = [c for c in nb['cells'] if c['cell_type'] == 'code']
    ns = {}
    exec(''.join(next(c for c in code if 'parameters' in c['metadata'].get('tags', []))['source']), ns)
    ns.update(params)
    exec(''.join(next(c for c in code if 'resolve_configs(' in ''.join(c['source']))['source']), ns)
    return ns

@pytest.mark.parametrize('name, k_key, k', [('train_nnclr', 'queue_size', 65536), ('train_excb', 'n_clusters', 2048)])
def test_preset_cifar_resolves_paper_recipe(name, k_key, k):
    "`-p preset cifar` with every other parameter at its default (None) resolves to the preset: ResNet-18 and its K."
    ns = notebook_namespace(name, preset='cifar')
    assert ns['overrides'] == {}                          # nothing preset-owned is passed by default
    tc, mc = ns['train_cfg'], ns['method_cfg']
    assert tc.backbone == 'resnet18' and tc.dataset == 'cifar10' and getattr(mc, k_key) == k
    ns = notebook_namespace(name, preset='small', epochs=3)
    assert ns['overrides'] == {'epochs': 3} and ns['train_cfg'].backbone == 'convnet'

@pytest.mark.parametrize('name, params', [
    ('train_all4one', dict(epochs=2, train_per_class=20, batch_size=64, queue_size=128)),
    ('train_adasim', dict(epochs=2, dataset='digits', train_per_class=20, batch_size=64, window=1, topk=3, n_queries=2)),
])
def test_other_train_notebooks_headless(tmp_path, name, params):
    "Every train notebook ends its training cells with static figures of the final state and keeps widget state small."
    nb, out = run_notebook(name, tmp_path, run_dir=str(tmp_path / 'runs' / 'run'), show_umap=False, **params)
    figs = [o['data'][PLOTLY] for o in outputs(nb) if PLOTLY in o.get('data', {})]
    assert figs, 'no plotly figure kept in the output notebook'
    knn = [t for f in figs for t in f['data'] if str(t.get('name', '')).endswith('knn/top1')]
    assert knn and max(len(t['y']) for t in knn) == params['epochs'] + 1     # the final state, not a first figure
    widgets = json.dumps(nb['metadata'].get('widgets', {}))
    assert len(widgets) < 300_000 and PLOTLY not in widgets
    assert out.stat().st_size < 3_000_000

def test_adasim_notebook_compares_variants(tmp_path):
    "train_adasim trains base, +NN and +AdaSim at the same budget and keeps the per-epoch diagnostics and the neighbour grid."
    nb, _ = run_notebook('train_adasim', tmp_path, epochs=2, dataset='digits', train_per_class=20, batch_size=64,
                         window=1, topk=3, n_queries=2, base='simsiam', run_dir=str(tmp_path / 'run'))
    figs = [o['data']['application/vnd.plotly.v1+json'] for o in outputs(nb) if 'application/vnd.plotly.v1+json' in o.get('data', {})]
    diag = next(f for f in figs if 'AdaSim diagnostics' in str(f['layout'].get('title', '')))
    names = {t.get('name') for t in diag['data']}
    assert names == {'simsiam', 'simsiam + NN', 'simsiam + AdaSim'}
    grid = next(f for f in figs if 'p_win' in str(f['layout'].get('title', '')))
    assert sum(t['type'] == 'image' for t in grid['data']) >= 2
    table = next(''.join(o['data']['text/markdown']) for o in outputs(nb) if 'text/markdown' in o.get('data', {}) and '| run |' in ''.join(o['data']['text/markdown']))
    assert '| simsiam + AdaSim |' in table and '| simsiam + NN |' in table and 'bootstrap/ratio' in table
    for v in ('nn', 'none'): assert (tmp_path / f'run-{v}' / 'checkpoints' / 'last.pt').exists()



def test_jcl_notebook_compares_mocov2(tmp_path):
    "train_jcl keeps both runs: the comparison figure, the results rows and the §5 histograms of both models."
    nb, _ = run_notebook('train_jcl', tmp_path, epochs=1, train_per_class=20, batch_size=32, queue_size=64, n_keys=2,
                         diag_images=16, diag_augs=3, show_umap=False, run_dir=str(tmp_path / 'run'))
    figs = [o['data']['application/vnd.plotly.v1+json'] for o in outputs(nb) if 'application/vnd.plotly.v1+json' in o.get('data', {})]
    names = {t.get('name', '') for f in figs for t in f['data']}
    assert {'jcl: loss/jcl', 'mocov2: loss/contrastive', 'jcl: knn/top1', 'mocov2: knn/top1'} <= names
    hists = [t for f in figs for t in f['data'] if t.get('type') == 'histogram']
    assert {t['name'] for t in hists} == {'jcl', 'mocov2'} and len(hists) == 4 and all(len(t['x']) == 16 for t in hists)
    md = [''.join(o['data']['text/markdown']) for o in outputs(nb) if 'text/markdown' in o.get('data', {})]
    assert any('| jcl |' in t and '| mocov2 |' in t and 'contrastive/acc1' in t for t in md)
    assert any('mean similarity' in t for t in md)
    assert (tmp_path / 'run-mocov2' / 'checkpoints' / 'last.pt').exists()

def test_a_misspelled_parameter_stops_the_notebook(tmp_path):
    "`-p epoch 1` (for `epochs`) stops at the cell after the parameters, naming the known parameters, before training."
    with pytest.raises(pm.PapermillExecutionError) as e:
        run_notebook('train_nnclr', tmp_path, epoch=1, run_dir=str(tmp_path / 'runs' / 'run'))
    assert "unknown notebook parameter(s) ['epoch']" in str(e.value) and "did you mean 'epochs'" in str(e.value)
    assert not (tmp_path / 'runs').exists()                                  # nothing trained, nothing created

@pytest.mark.parametrize('name', sorted(p.stem for p in (ROOT / 'nbs').glob('*.ipynb')
                                        if '"parameters"' in p.read_text()))
def test_every_parameterised_notebook_checks_its_parameters(name):
    "The code cell after each parameters cell calls `check_notebook_parameters()` (papermill injects between them)."
    code = [c for c in json.loads((ROOT / 'nbs' / f'{name}.ipynb').read_text())['cells'] if c['cell_type'] == 'code']
    i = next(i for i, c in enumerate(code) if 'parameters' in c['metadata'].get('tags', []))
    assert 'check_notebook_parameters()' in ''.join(code[i + 1]['source'])
