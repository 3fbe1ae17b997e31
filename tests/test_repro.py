"The reproduction notebooks run headless with papermill at budget='tiny' and print the comparison table and a verdict."
import json, time
from pathlib import Path
import pytest
import papermill as pm

ROOT = Path(__file__).resolve().parents[1]

def run_repro(name, tmp_path, **params):
    out = tmp_path / f'{name}.out.ipynb'
    t0 = time.time()
    pm.execute_notebook(str(ROOT / 'nbs' / f'{name}.ipynb'), str(out), kernel_name='python3', cwd=str(tmp_path),
                        progress_bar=False, parameters=dict(budget='tiny', root=str(tmp_path / 'runs'), **params))
    print(f"{name}: {time.time() - t0:.0f} s at budget='tiny'")
    return json.loads(out.read_text())

def texts(nb):
    "All text the code cells printed or displayed (stdout, markdown, plain text)."
    out = []
    for c in nb['cells']:
        for o in c.get('outputs', []) if c['cell_type'] == 'code' else []:
            out.append(''.join(o.get('text', '')))
            for k in ('text/markdown', 'text/plain'): out.append(''.join(o.get('data', {}).get(k, '')))
    return '\n'.join(out)

@pytest.mark.parametrize('name, rows, pairs', [
    ('repro_all4one', ['| NNCLR | nnclr | 91.88 |', '| All4One | all4one | 93.24 |', '| v3 | all4one | 71.08 |'],
     ['All4One − NNCLR', 'v6 (All4One) − v3']),
    ('repro_excb', ['| DINO | dino | 73.80 |', '| ExCB | excb | 73.90 |', '| DINO | dino | 74.70 |'],
     ['DINO − ExCB', 'ExCB − DINO']),
    ('repro_adasim', ['| DINO-2 + AdaSim | adasim | 60.10 |', '| SimSiam + NN | adasim | 65.90 |', '| SimSiam | adasim | 57.10 |'],
     ['DINO-2 + AdaSim − DINO-2', 'SimSiam + AdaSim − SimSiam', 'SimSiam − SimSiam + NN', 'DINO-2 − DINO-2 + NN']),
    ('repro_jcl', ['| MoCo v2 | mocov2 | 67.50 |', '| JCL | jcl | 68.70 |', "| M'=5 λ=0 | jcl | — |"],
     ['JCL − MoCo v2', "M'=5 λ=4 − M'=2 λ=4"]),
])
def test_repro_tiny(tmp_path, name, rows, pairs):
    nb = run_repro(name, tmp_path)
    out = texts(nb)
    for r in rows: assert r in out, f"{r!r} not in the output of {name}"
    for p in pairs: assert f"At the `tiny` budget, {p} = " in out, f"no verdict for {p} in {name}"
    assert "The paper's direction" in out
    assert 'application/vnd.plotly.v1+json' in json.dumps(nb)                  # the figure was shown
    assert list((tmp_path / 'runs').glob('*/tiny/comparison.json'))             # compare wrote its record

def digits_folder(root, per_class=12):
    "The project's `digits` data (sklearn's, 16×16 RGB) written as PNGs in train/<class>/ and test/<class>/: data the project never ships as images."
    from PIL import Image
    from ssl_workbench.data import load_dataset
    d = load_dataset('digits', train_per_class=per_class, test_per_class=per_class)
    for split, x, y in (('train', d.train_x, d.train_y), ('test', d.test_x, d.test_y)):
        for j, (img, c) in enumerate(zip(x, y.tolist())):
            (root / split / d.classes[c]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(root / split / d.classes[c] / f'{j}.png')
    return d.classes

@pytest.mark.parametrize('name', ['repro_all4one', 'repro_excb', 'repro_adasim', 'repro_jcl'])
def test_repro_on_other_data(tmp_path, name):
    "`-p data_path DIR` replaces the embedded data in every run of the comparison (the reviewer's 'data never seen')."
    names = digits_folder(tmp_path / 'digits')
    nb = run_repro(name, tmp_path, data_path=str(tmp_path / 'digits'))
    assert "The paper's direction" in texts(nb)
    configs = list((tmp_path / 'runs').glob('*/tiny/*/config.json'))
    assert configs
    for f in configs:
        c = json.loads(f.read_text())
        assert c['train']['data_path'] == str(tmp_path / 'digits') and c['data']['classes'] == sorted(names), f
