"The experiment notebooks run headless with papermill at tiny parameters and keep their plots and results."
import json, os
from pathlib import Path
import pytest
import papermill as pm

ROOT = Path(__file__).resolve().parents[1]

def outputs(nb):
    return [o for c in nb['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', [])]

def run_notebook(name, tmp_path, **params):
    out = tmp_path / f'{name}.out.ipynb'
    pm.execute_notebook(str(ROOT / 'nbs' / f'{name}.ipynb'), str(out), parameters=params, kernel_name='python3',
                        cwd=str(tmp_path), progress_bar=False)
    return json.loads(out.read_text()), out

@pytest.mark.parametrize('name, params', [
    ('train_nnclr', dict(epochs=2, train_per_class=40, batch_size=64, queue_size=256)),
    ('train_excb', dict(epochs=2, train_per_class=40, batch_size=64, n_clusters=16, eval_every=1)),
    ('train_jcl', dict(epochs=2, train_per_class=40, batch_size=64, queue_size=256, n_keys=2, diag_images=32, diag_augs=4)),
])
def test_train_notebook_headless(tmp_path, name, params):
    run_dir = tmp_path / 'run'
    nb, out = run_notebook(name, tmp_path, run_dir=str(run_dir), show_umap=False, **params)
    outs = outputs(nb)
    figs = [o for o in outs if 'application/vnd.plotly.v1+json' in o.get('data', {})]
    assert figs, 'no plotly figure kept in the output notebook'
    fig = figs[0]['data']['application/vnd.plotly.v1+json']
    names = {t.get('name') for t in fig['data']}
    assert {'loss/total', 'knn/top1'} <= names
    knn = next(t for t in fig['data'] if t.get('name') == 'knn/top1')
    assert len(knn['y']) == 3     # initialisation + 2 epochs: the last update, not the first empty figure
    tables = [o for o in outs if 'text/markdown' in o.get('data', {}) and '| run |' in ''.join(o['data']['text/markdown'])]
    assert tables and 'knn/top1' in ''.join(tables[0]['data']['text/markdown'])
    assert out.stat().st_size < 2_000_000
    for f in ('config.json', 'metrics.jsonl', 'checkpoints/last.pt', 'backbone.pt', 'report.html'):
        assert (run_dir / f).exists(), f

def test_excb_notebook_compares_dino(tmp_path):
    "train_excb keeps both runs' cluster diagnostics: the side-by-side figure and the table rows."
    nb, _ = run_notebook('train_excb', tmp_path, epochs=1, train_per_class=20, batch_size=64, n_clusters=16,
                         eval_every=1, show_umap=False, run_dir=str(tmp_path / 'run'))
    figs = [o['data']['application/vnd.plotly.v1+json'] for o in outputs(nb) if 'application/vnd.plotly.v1+json' in o.get('data', {})]
    names = {t.get('name', '') for f in figs for t in f['data']}
    assert {'excb: clusters/min_rel', 'dino: clusters/max_rel'} <= names
    assert any(n.startswith('excb (') and 'empty)' in n for n in names) and any(n.startswith('dino (') for n in names)
    table = next(''.join(o['data']['text/markdown']) for o in outputs(nb) if 'text/markdown' in o.get('data', {}))
    assert '| excb |' in table and '| dino |' in table and 'clusters/empty' in table
    assert (tmp_path / 'run-dino' / 'checkpoints' / 'last.pt').exists()

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
