"""The documentation's tables, rendered from the code they describe, each in one place.

    <!-- table: presets -->     study/presets/*.toml: each preset's opening sentence and what it runs
    <!-- table: settings -->    StudyConfig's fields: flag, default, help text and choices, by group
    <!-- table: losses -->      kd.losses' registry, with the formulas of kd.losses' docstring
    <!-- table: recipes -->     kd.methods' registry: each recipe's stages, student and augmentation

mkdocs runs this file as a hook (`hooks:` in mkdocs.yml): a page's marker line becomes the table.
The README cannot be rendered at build time, so it holds its presets table between
`<!-- table: presets -->` and `<!-- /table -->`, and tests/test_docs.py checks it against `render`;

    python tools/docs_tables.py --readme     # rewrites the README's presets table
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKER = re.compile(r"^<!-- table: ([\w-]+) -->$", re.M)
END = "<!-- /table -->"

if str(ROOT) not in sys.path:  # mkdocs loads this file by path, from wherever it was started
    sys.path.insert(0, str(ROOT))


def _cell(value) -> str:
    """A value as one markdown table cell: no line breaks, no bare pipes."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _value(value) -> str:
    """A setting's value as a study file writes it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    return json.dumps(value)


def presets() -> str:
    from study.config import PRESETS, preset_summaries, resolve

    rows = []
    for name, summary in preset_summaries().items():
        config = resolve(name)  # the preset over the defaults: what it runs
        search = "a grid" if config.sampler == "grid" else f"{config.trials} trials of {config.sampler}"
        epochs = "each recipe's epochs" if config.epochs is None else f"{config.epochs} epochs"
        facts = [
            "methods " + ", ".join(config.methods),
            search,
            f"{config.seeds} seed{'s' if config.seeds != 1 else ''}",
            epochs,
            f"data `{PRESETS[name].get('data', config.data)}`",  # as written: resolve() makes paths absolute
            "images " + "x".join(str(side) for side in config.image_size),
        ]
        rows.append([f"`{name}`", f"{summary}: " + "; ".join(facts)])
    return _table(["preset", "what it runs"], rows)


def settings() -> str:
    from study.settings import FIELDS, GROUPS, StudyConfig, flag

    defaults = StudyConfig()
    parts = []
    for group in GROUPS:
        rows = [
            [
                f"`{name}`",
                f"`{flag(name)}`",
                f"`{_value(getattr(defaults, name))}`",
                field.metadata["help"]
                + (
                    f" (one of: {', '.join(map(str, field.metadata['choices']))})"
                    if field.metadata["choices"]
                    else ""
                ),
            ]
            for name, field in FIELDS.items()
            if field.metadata["group"] == group
        ]
        parts.append(
            f"### {group.capitalize()} settings\n\n"
            + _table(["setting", "flag", "default", "what it does"], rows)
        )
    return "\n\n".join(parts)


def _formulas() -> dict[str, list[str]]:
    """kd.losses' docstring entries, by term: [what it is, per element, divided by]. An entry is a
    line that opens with the term's name in backticks; its indented lines go on with it."""
    import kd.losses

    entries, field = {}, None
    for line in kd.losses.__doc__.splitlines():
        if named := re.match(r"^`(\w+)`\s+(.*)$", line):
            fields = entries[named.group(1)] = ["", "", ""]
            field = 0
            fields[0] = named.group(2)
        elif field is not None and line.startswith(" ") and line.strip():
            key, _, rest = line.strip().partition(": ")
            if key in ("per element", "divided by"):
                field = 1 if key == "per element" else 2
                fields[field] = rest
            else:
                fields[field] += " " + line.strip()
        else:
            field = None
    return entries


def losses() -> str:
    from kd.losses import TERMS

    terms = {name: cls for name, cls in TERMS.items() if cls.__module__.startswith("kd.")}  # not plugins'
    formulas = _formulas()
    missing = sorted(set(terms) - set(formulas))
    extra = sorted(set(formulas) - set(terms))
    if missing or extra:
        raise ValueError(
            f"kd.losses' docstring and its registry differ: terms without an entry {missing}, "
            f"entries without a term {extra}; give every term of kd.losses one entry there"
        )
    rows = []
    for name, cls in terms.items():
        options = ", ".join(
            f"{p.name}={p.default!r}" if p.default is not inspect.Parameter.empty else p.name
            for p in inspect.signature(cls).parameters.values()
        )
        rows.append([f"`{name}`", f"`{cls.__name__}`", *formulas[name], f"`{options}`" if options else ""])
    return _table(["name", "class", "term", "per element (p = softmax)", "divided by", "options"], rows)


def _stage(stage) -> str:
    weights = " + ".join(
        f"{weight:g} {term}" if weight != 1 else term for term, weight in stage.losses.items() if weight
    )
    optimizer = stage.optimizer
    stream = f", on the `{stage.stream}` stream" if stage.stream != "target" else ""
    return (
        f"`{stage.name}`: {weights}, trains {', '.join(stage.train)}, {stage.epochs} epochs, "
        f"{optimizer.kind} lr {optimizer.lr:g}{stream}"
    )


def recipes() -> str:
    from kd.methods import RECIPES, build_recipe

    rows = []
    for name, make in RECIPES.items():
        if not getattr(make, "func", make).__module__.startswith("kd."):  # a plugin's, or a test's
            continue
        recipe = build_recipe(name)
        rows.append(
            [
                f"`{name}`",
                recipe.description,
                "; ".join(_stage(stage) for stage in recipe.stages),
                f"`{recipe.student}`",
                f"`{recipe.augmentation}`",
            ]
        )
    return _table(["recipe", "what it is", "stages (defaults)", "student", "augmentation"], rows)


TABLES = {"presets": presets, "settings": settings, "losses": losses, "recipes": recipes}


def render(name: str) -> str:
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r} in a marker; known: {', '.join(TABLES)}")
    return TABLES[name]()


def on_page_markdown(markdown: str, **_) -> str:
    """mkdocs' hook: each marker line becomes its table."""
    return MARKER.sub(lambda found: render(found.group(1)), markdown)


def readme_block(text: str, name: str) -> str | None:
    """The README's generated block `name` (between its marker and END); None without one."""
    begin = f"<!-- table: {name} -->\n"
    start = text.find(begin)
    end = text.find(END, start)
    if start < 0 or end < 0:
        return None
    return text[start + len(begin) : end].strip("\n")


def rewrite_readme(path: Path = README, name: str = "presets") -> None:
    text = path.read_text()
    old = readme_block(text, name)
    if old is None:
        raise SystemExit(f"{path} has no <!-- table: {name} --> ... {END} block")
    begin = f"<!-- table: {name} -->\n"
    start = text.find(begin) + len(begin)
    path.write_text(text[:start] + render(name) + "\n" + text[text.find(END, start) :])


if __name__ == "__main__":
    if sys.argv[1:] == ["--readme"]:
        rewrite_readme()
    else:
        names = sys.argv[1:] or list(TABLES)
        print("\n\n".join(render(name) for name in names))
