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
    ('train_all4one', dict(epochs=2, train_per_class=20, batch_size=64, queue_size=128)),
    ('train_adasim', dict(epochs=2, dataset='digits', train_per_class=20, batch_size=64, window=1, topk=3, n_queries=2)),
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
