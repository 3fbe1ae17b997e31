"Visual diagnostics: embedding snapshots across resume, figure structure, retrieval against a naive search, compare_runs headless."
import base64, io, json, os
from pathlib import Path
import numpy as np
import pytest, torch
import papermill as pm
from PIL import Image
from ssl_workbench.train import train, method_features
from ssl_workbench.viz import (EmbeddingSnapshots, load_snapshots, umap_frames, embedding_figure, retrieval_results,
                               retrieval_grid, cluster_sizes_figure, load_run_dir, BORDER)

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(dataset='digits', train_per_class=20, batch_size=64, queue_size=256, progress=False)
SLOW = pytest.mark.skipif(not os.environ.get('SSL_WORKBENCH_SLOW'), reason='slow (UMAP): set SSL_WORKBENCH_SLOW=1')

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    torch.set_num_threads(1)
    return train('nnclr', epochs=2, run_dir=tmp_path_factory.mktemp('viz') / 'run',
                 callbacks=[EmbeddingSnapshots(n_per_class=6, classes=[1, 4, 8])], **TINY)

def test_snapshots_survive_resume(tmp_path, run):
    "1 epoch, stop, resume: the same fixed subset and the same snapshots as the straight 2-epoch run."
    cb = lambda: [EmbeddingSnapshots(n_per_class=6, classes=[1, 4, 8])]
    train('nnclr', epochs=2, run_dir=tmp_path / 'b', stop_after_epochs=1, callbacks=cb(), **TINY)
    assert sorted(p.name for p in (tmp_path / 'b' / 'embeddings').glob('*.pt')) == ['epoch_00000.pt', 'epoch_00001.pt']
    resumed = train(resume=tmp_path / 'b', callbacks=cb())
    a, b = load_snapshots(run), load_snapshots(resumed.run_dir)
    assert a['epochs'] == b['epochs'] == [0, 1, 2] and a['steps'] == b['steps']
    assert (a['indices'] == b['indices']).all() and np.array_equal(a['features'], b['features'])
    assert sorted(set(a['labels'].tolist())) == [1, 4, 8] and len(a['labels']) == 18
    x = run.data.test_x[torch.as_tensor(a['indices'])]
    assert np.allclose(a['features'][-1], method_features(run.method, x, run.view_maker.normalize).numpy(), atol=1e-2, rtol=1e-2)
    with pytest.raises(Exception, match='another subset'):         # a different subset in the same run directory
        train(resume=tmp_path / 'b', callbacks=[EmbeddingSnapshots(n_per_class=3)])

def test_embedding_figure_pca(run):
    fr = umap_frames(run.run_dir, method='pca')
    assert fr['coords'].shape == (3, 18, 2)
    fig = embedding_figure(fr)
    assert [t.name for t in fig.data] == ['1', '4', '8']
    sl = fig.layout.sliders[0]
    assert [s.label for s in sl.steps] == ['0', '1', '2'] and sl.active == 2
    for e, s in enumerate(sl.steps):
        assert s.method == 'update' and len(s.args[0]['x']) == 3
        assert np.allclose(s.args[0]['y'][2], fr['coords'][e][fr['labels'] == 8, 1], atol=1e-3)
    assert list(fig.data[0].x) == sl.steps[-1].args[0]['x'][0]

@SLOW
def test_umap_frames(run):
    fr = umap_frames(run, method='umap')
    assert fr['coords'].shape == (3, 18, 2) and np.isfinite(fr['coords']).all()
    assert len(embedding_figure(fr).layout.sliders[0].steps) == 3

def test_retrieval_matches_naive_search(run):
    r = retrieval_results(run, n_queries=4, k=3, seed=3)
    bank = run.features('train')[0].double()
    qf = method_features(run.method, run.data.test_x[r['query']], run.view_maker.normalize).double()
    for i in range(4):
        cos = torch.stack([torch.dot(qf[i], b) / qf[i].norm() / b.norm() for b in bank])
        order = sorted(range(len(cos)), key=lambda j: -cos[j].item())[:3]
        assert r['neighbours'][i].tolist() == order
        assert torch.allclose(r['similarity'][i].double(), cos[order], atol=1e-5)
        assert r['query_label'][i] == run.data.test_y[r['query'][i]]
    fig = retrieval_grid(run, results=r)
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(fig.data[0].source.split(',', 1)[1]))))
    correct = r['neighbour_label'] == r['query_label'][:, None]
    for i in range(4):
        for j in range(3):     # frame pixel of neighbour j of query i: 72-px tiles, 4-px gaps, 8 px after the query
            assert tuple(img[i * 76 + 1, (j + 1) * 76 + 8 + 1]) == BORDER['correct' if correct[i, j] else 'wrong']
    assert len(fig.to_json()) < 200_000

def test_cluster_sizes_from_run_dir(tmp_path):
    run = train('excb', dataset='digits', train_per_class=20, epochs=2, batch_size=64, progress=False, run_dir=tmp_path / 'excb')
    fig = cluster_sizes_figure(tmp_path / 'excb')
    sizes = [r['clusters/sizes_sorted'] for r in run.epochs if 'clusters/sizes_sorted' in r]
    assert [s.label for s in fig.layout.sliders[0].steps] == ['1', '2']
    assert fig.layout.sliders[0].steps[0].args[0]['y'][0] == [max(v, 1e-3) for v in sizes[0]]
    assert f"({sum(v == 0 for v in sizes[-1])}/{len(sizes[-1])} empty)" in fig.data[0].name
    assert load_run_dir(tmp_path / 'excb').history == run.history

def test_compare_runs_notebook(tmp_path):
    "Two runs differing in lr (one with embedding snapshots): compare_runs lists lr as the difference, shows both."
    for name, lr, cbs in (('a', 0.4, [EmbeddingSnapshots(n_per_class=5, classes=3)]), ('b', 0.1, [])):
        train('nnclr', epochs=1, lr=lr, run_dir=tmp_path / 'runs' / name, callbacks=cbs, **TINY)
    out = tmp_path / 'compare.out.ipynb'
    pm.execute_notebook(str(ROOT / 'nbs' / 'compare_runs.ipynb'), str(out), parameters=dict(embedding_method='pca'),
                        kernel_name='python3', cwd=str(tmp_path), progress_bar=False)
    outs = [o for c in json.loads(out.read_text())['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', [])]
    mds = [''.join(o['data']['text/markdown']) for o in outs if 'text/markdown' in o.get('data', {})]
    diff = next(m for m in mds if 'Configuration differences' in m)
    rows = [l for l in diff.splitlines() if l.startswith('| ') and not l.startswith('| key')]
    assert [l.split('|')[1].strip() for l in rows] == ['lr'] and '| lr | 0.4 | 0.1 |' in diff
    table = next(m for m in mds if 'Final metrics' in m)
    assert '| a |' in table and '| b |' in table and 'knn/top1' in table
    figs = [o['data']['application/vnd.plotly.v1+json'] for o in outs if 'application/vnd.plotly.v1+json' in o.get('data', {})]
    names = {t.get('name') for f in figs for t in f['data']}
    assert {'a: loss/total', 'b: loss/total', 'a: knn/top1', 'b: knn/top1'} <= names
    assert any(f['layout'].get('sliders') for f in figs)          # run a's embedding frames
    assert out.stat().st_size < 3_000_000
