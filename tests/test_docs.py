"The landing page (nbs/index.ipynb) and the README give the same two set-up commands."
import json, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands(text: str) -> list:
    "The command lines of the first ```bash block after a '## Two commands' heading."
    sec = text.split('## Two commands', 1)[1]
    block = re.search(r'```bash\n(.*?)```', sec, re.S).group(1)
    return [l.strip() for l in block.strip().splitlines() if l.strip()]


def test_readme_and_landing_page_give_the_same_two_commands():
    nb = json.loads((ROOT / 'nbs' / 'index.ipynb').read_text())
    page = '\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown')
    readme, landing = _commands((ROOT / 'README.md').read_text()), _commands(page)
    assert readme == landing, (readme, landing)
    assert [l.split()[:2] for l in readme] == [['make', 'report'], ['make', 'test']]


def test_the_two_commands_are_the_makefile_targets_ci_runs():
    mk = (ROOT / 'Makefile').read_text()
    assert re.search(r'^report:', mk, re.M) and re.search(r'^test:', mk, re.M)
    assert 'make test' in (ROOT / '.ci' / 'run').read_text()


def test_readme_lists_every_zwarning_bit_as_the_code_defines_it():
    from spectral_nb.catalog import ZWARNING

    text = (ROOT / 'README.md').read_text()
    rows = re.findall(r'^\| (\d+) \| (\d+) \| `(\w+)` \| (.+?) \|$', text, re.M)
    assert {int(b): (n, m) for b, v, n, m in rows} == {b: (n, m) for b, (n, m) in ZWARNING.items()}
    assert all(int(v) == 1 << int(b) for b, v, _, _ in rows)
