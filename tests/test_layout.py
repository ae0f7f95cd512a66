"""How the code is laid out, checked: imports run one way (no cycle in `apm/` or `app/`), every app handler goes
through the one error wrapper, a choice list is read from its registry (a new teacher or recipe touches its own
module only), and the one run driver shares, queues and stops runs as the page expects."""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str) -> dict[str, set[str]]:
    """Every module of `package` -> the modules of the package it imports anywhere in its file (at the top, inside
    a function, or for type checking only)."""
    files = {_module_name(p): p for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        here = name if is_package else name.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here
                for _ in range(node.level - 1):
                    base = base.rsplit(".", 1)[0]
                module = node.module if node.level == 0 else ".".join(filter(None, [base, node.module]))
                # `from pkg import sub` imports the submodule; `from pkg import name` imports pkg
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in files else module for a in node.names]
            for target in targets:
                while target and target not in files:  # a name imported from a module: the module
                    target = target.rsplit(".", 1)[0] if "." in target else ""
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("package", ["apm", "app"])
def test_no_import_cycle(package):
    cycle = find_cycle(import_graph(package))
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_run_one_way():
    """apm never imports app or gradio; the state imports no engine, panel or tab; the engine no panel, tab or
    gradio; panels no tab; the checkpoint reads the model, never the reverse."""
    graph = {**import_graph("apm"), **import_graph("app")}
    for name, edges in graph.items():
        if name.startswith("apm"):
            assert not any(e.startswith("app") for e in edges), name
    for path in (ROOT / "apm").rglob("*.py"):
        assert "import gradio" not in path.read_text(), path
    state_deps = graph["app.session"] | graph["app.settings"]
    assert not any(e.startswith(("app.engine", "app.panels", "app.tabs", "app.widgets", "app.api")) for e in state_deps)
    for name in [n for n in graph if n.startswith("app.engine")]:
        assert not any(e.startswith(("app.panels", "app.tabs", "app.api", "app.widgets", "app.controls")) for e in graph[name]), name
        assert "gradio" not in (ROOT / (name.replace(".", "/") + ("/__init__.py" if name == "app.engine" else ".py"))).read_text()
    for name in [n for n in graph if n.startswith("app.panels")]:
        assert not any(e.startswith(("app.tabs", "app.api", "app.ui")) for e in graph[name]), name
    assert "apm.model" in graph["apm.checkpoint"] and "apm.checkpoint" not in graph["apm.model"]
    for name, edges in graph.items():  # test support drives the app from outside: the app never imports it
        if not name.startswith("app.testing"):
            assert not any(e.startswith("app.testing") for e in edges), name


def test_every_handler_goes_through_the_one_error_wrapper():
    """No hand-written `except Exception` in app/: the wrapper (`app.widgets.guarded`) is the one place, besides
    the driver's thread, which hands a run's error to every viewer of the run (re-raised in `Run.follow`)."""
    found = []
    for path in (ROOT / "app").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler) and isinstance(node.type, ast.Name) and node.type.id in (
                    "Exception", "BaseException"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert all(f.startswith(("app/widgets.py", "app/engine/driver.py")) for f in found), found
    assert len(found) <= 4  # guarded's two (a function, a generator), the toast outside an event, the driver


# a teacher and a recipe added by their own modules alone: here, a throwaway pair


def test_a_new_teacher_and_recipe_appear_everywhere_from_their_registries():
    from apm.cli import build_parser
    from apm.recipes import RECIPES, Recipe, experiment, register_recipe
    from apm.teachers import DINOv2Teacher, register_teacher, teacher_picks, teacher_spec
    from apm.teachers import registry as teacher_registry
    from app.controls import Controls, walk_teachers
    from app.settings import choice, recipe_choices, teacher_choices

    class ThrowawayTeacher(DINOv2Teacher):
        name = "throwaway"
        rank = 50
        PICKS = (("A throwaway DINOv2", "throwaway"),)

    try:
        register_teacher(ThrowawayTeacher)
        register_recipe(Recipe("throwaway-recipe", "A throwaway recipe", "Five steps on the throwaway teacher.",
                               {"teacher": "throwaway", "steps": 5}, trains=True))
        assert ("A throwaway DINOv2", "throwaway") in teacher_picks()
        assert choice("throwaway", teacher_choices(), "teacher") == "throwaway"  # the page's and the API's check
        assert ("A throwaway DINOv2", "throwaway") in walk_teachers()
        assert teacher_spec("throwaway").num_layers == 12
        assert ("A throwaway recipe", "throwaway-recipe") in recipe_choices()
        exp = experiment("throwaway-recipe")
        assert exp.teacher == "throwaway" and exp.steps == 5 and exp.trains
        args = build_parser().parse_args(["overfit", "x.png", "--recipe", "throwaway-recipe", "--out", "o"])
        assert args.recipe == "throwaway-recipe"  # the CLI's --recipe reads the registry
        settings = Controls.read({"recipe": "throwaway-recipe", "teacher": "throwaway", "steps": 5})
        assert settings.experiment.teacher == "throwaway" and settings.experiment.trains
    finally:
        teacher_registry._REGISTRY.pop("throwaway", None)
        RECIPES.pop("throwaway-recipe", None)
    assert "throwaway" not in [k for _, k in teacher_choices()]


def test_a_recipes_behaviour_is_a_field_not_its_name():
    """The CLI refuses the teacher-islands recipe because it trains nothing and trained-apm because it needs a
    checkpoint, read from the recipes' fields: a renamed copy behaves the same."""
    from dataclasses import replace

    from apm.cli import main
    from apm.recipes import RECIPES, register_recipe

    try:
        register_recipe(replace(RECIPES["teacher-islands"], name="no-apm"))
        register_recipe(replace(RECIPES["trained-apm"], name="from-a-checkpoint"))
        assert main(["overfit", str(ROOT / "assets/examples/face.png"), "--recipe", "no-apm", "--out", "/tmp/x"]) == 1
        assert main(["overfit", str(ROOT / "assets/examples/face.png"), "--recipe", "from-a-checkpoint",
                     "--teacher", "dinov2", "--out", "/tmp/x"]) == 1
    finally:
        RECIPES.pop("no-apm", None)
        RECIPES.pop("from-a-checkpoint", None)


def test_one_home_for_the_grid_and_the_steps():
    from apm.errors import InputError
    from apm.model import check_grid
    from apm.recipes import MIN_STEPS, check_steps
    from app.controls import read_grid
    from app.settings import read_steps

    assert check_grid(None) is None and check_grid("auto") is None and check_grid("32") == 32 and read_grid(24) == 24
    for bad in (17, "x", 16.5, float("nan")):
        with pytest.raises(InputError, match="grid must be one of 16, 24, 32"):
            check_grid(bad)
    assert check_steps(MIN_STEPS) == MIN_STEPS == 1 and read_steps(None) == 300 and read_steps("1") == 1
    for bad in (0, -3, 2.5, "many"):
        with pytest.raises(InputError, match="steps must be"):
            read_steps(bad)


# the one run driver


def _slow(items: int, seconds: float, counter: list):
    def produce(run):
        counter.append(1)
        for k in range(items):
            if run.should_stop():
                return
            time.sleep(seconds)
            yield k

    return produce


def test_the_driver_trains_one_key_once_and_viewers_join():
    from app.engine.driver import Runs

    runs, trained = Runs(slots=1, max_waiting=4), []
    run, a, source_a = runs.submit("key", _slow(5, 0.05, trained), 1.0)
    same, b, source_b = runs.submit("key", _slow(5, 0.05, trained), 1.0)
    assert same is run and (source_a, source_b) == ("trained", "joined")
    seen = {}
    threads = [threading.Thread(target=lambda v=v: seen.__setitem__(v, list(run.follow(v)))) for v in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert trained == [1] and seen[a][-1] == seen[b][-1] == 4  # one computation, the same last item for both


def test_the_driver_line_places_stops_and_refuses_with_one_line():
    from app.engine.driver import QueueFull, Runs, Waiting

    runs, trained = Runs(slots=1, max_waiting=2), []
    first, v1, _ = runs.submit(None, _slow(200, 0.02, trained), 4.0)
    second, v2, _ = runs.submit(None, _slow(2, 0.01, trained), 2.0)
    third, v3, _ = runs.submit(None, _slow(2, 0.01, trained), 2.0)
    assert runs.place(second) == Waiting(1, pytest.approx(4.0, abs=0.5)) and runs.place(third).position == 2
    assert runs.place(third).eta_s > runs.place(second).eta_s
    assert "2nd in line, about" in runs.place(third).text()
    started = time.monotonic()
    with pytest.raises(QueueFull, match=r"^the app is full: 2 runs are waiting; try again in about \d+ s$"):
        runs.submit(None, _slow(2, 0.01, trained), 2.0)
    assert time.monotonic() - started < 0.5  # at once, not a hang
    third.leave(v3)  # a visitor who leaves the line: that run is never trained
    assert third.state == "cancelled" and runs.place(second).position == 1
    first.leave(v1)  # the last viewer of the running run: it stops, and the next one starts
    assert first.wait_finished(5) and second.wait_finished(5)
    assert second.state == "done" and len(trained) == 2
    assert list(second.follow(v2)) == [1]  # a viewer that looks at a finished run gets its newest item


def test_stop_by_one_viewer_leaves_the_run_going_for_the_other():
    from app.engine.driver import Runs

    runs, trained = Runs(slots=1, max_waiting=4), []
    run, a, _ = runs.submit("k", _slow(40, 0.02, trained), 1.0)
    _, b, _ = runs.submit("k", _slow(40, 0.02, trained), 1.0)
    run.leave(a)
    time.sleep(0.2)
    assert not run.should_stop() and not run.finished  # b still watches
    items = list(run.follow(b))
    assert run.state == "done" and items[-1] == 39
