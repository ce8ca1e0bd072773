"""medmo_rl/ablate.py: every row is a valid config that differs from the recipe in what it names."""
from medmo_rl.ablate import COLUMNS, ROWS, markdown
from medmo_rl.config import load_config, to_dict


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_each_row_changes_only_the_keys_it_names():
    base = _flat(to_dict(load_config(None)))
    for row in ROWS:
        cfg = _flat(to_dict(load_config(None, list(row.overrides))))
        changed = {k for k in base if base[k] != cfg[k]}
        named = {o.split("=")[0] for o in row.overrides}
        assert changed <= named, (row.key, changed - named)
        if row.key not in ("full", "no_rl"):
            assert changed, f"row {row.key} does not differ from the recipe"  # e.g. the recipe already squares


def test_markdown_table_has_a_row_per_variant_in_percent():
    results = {r.key: {c: 0.5 for c in COLUMNS} for r in ROWS}
    results["full"]["boxes_per_image"] = 2.25
    text = markdown(results, list(ROWS), {"seconds": {r.key: 10.0 for r in ROWS}, "base": "/x"}, "python -m medmo_rl.ablate")
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert len(lines) == 1 + len(ROWS)  # header + one per row
    assert "| 2.25 |" in lines[1] and "| 50.0 |" in lines[1]


def test_a_rerun_replaces_the_table_and_keeps_the_analysis_around_it():
    from medmo_rl.ablate import splice

    first = splice("", "| old |\n")
    doc = "# intro\n" + first + "## What we see\nspam.\n"
    again = splice(doc, "| new |\n")
    assert "| new |" in again and "| old |" not in again
    assert again.startswith("# intro\n") and again.endswith("## What we see\nspam.\n")
