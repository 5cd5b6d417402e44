"""Play order (preflight before any change), and docs/preflight.md listing every rule."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import rules

ROOT = Path(__file__).resolve().parents[2]


def _tasks(play, book_dir=ROOT / "playbooks"):
    """A play's tasks, with the files it imports (import_tasks) read in their place."""
    tasks = []
    for task in play.get("tasks") or []:
        imported = task.get("ansible.builtin.import_tasks")
        if imported:
            tasks += _tasks({"tasks": yaml.safe_load((book_dir / imported).read_text())}, book_dir)
        elif isinstance(task, dict):
            tasks.append(task)
    return tasks


def _action(task):
    return next(
        (
            k
            for k in task
            if k
            not in {
                "name",
                "vars",
                "register",
                "delegate_to",
                "check_mode",
                "changed_when",
                "failed_when",
                "when",
                "tags",
            }
        ),
        None,
    )


def test_preflight_play_changes_nothing_and_is_check_mode_safe():
    for book in ("playbooks/preflight.yml", "playbooks/plan.yml"):
        for play in yaml.safe_load((ROOT / book).read_text()):
            for task in _tasks(play):
                # debug and fail report and change nothing; every other task says it changes nothing.
                assert task.get("changed_when") is False or _action(task) in (
                    "ansible.builtin.debug",
                    "ansible.builtin.fail",
                ), (
                    book,
                    task,
                )


def test_preflight_play_fails_refused_hosts():
    # The module fails a refused host, and gpu_facts a host whose GPUs are not the declared ones,
    # in preflight.yml (plan.yml sets vllm_preflight_refuse: false to report them instead).
    (play,) = yaml.safe_load((ROOT / "playbooks/preflight.yml").read_text())
    assert play["vars"]["vllm_preflight_refuse"] is True
    (check,) = [t for t in _tasks(play) if _action(t) == "vllm_fleet.fleet.vllm_preflight"]
    assert check["failed_when"] == "vllm_preflight_refuse | bool and vllm_preflight_result.failed | default(false)"
    (gpus,) = [t for t in _tasks(play) if _action(t) == "vllm_fleet.fleet.gpu_facts"]
    assert gpus["vllm_fleet.fleet.gpu_facts"]["fail_on_mismatch"] == "{{ vllm_preflight_refuse | bool }}"


def test_deploy_runs_preflight_before_any_role_that_changes_a_host():
    plays = yaml.safe_load((ROOT / "playbooks/deploy.yml").read_text())

    def imported(play):
        return play.get("ansible.builtin.import_playbook") or play.get("import_playbook")

    first = plays[0]
    assert imported(first) and imported(first).endswith("preflight.yml"), first
    for play in plays[1:]:
        assert imported(play) or play.get("roles") or play.get("tasks") is not None


def test_docs_list_every_rule_id():
    doc = (ROOT / "docs/preflight.md").read_text()
    missing = [r.id for r in rules.RULES if f"`{r.id}`" not in doc]
    assert not missing, f"docs/preflight.md lacks {missing}: run tests/data/gen_preflight_doc.py"


def test_model_configs_readme_names_every_shipped_config():
    readme = (ROOT / "model_configs/README.md").read_text()
    for cfg in (ROOT / "model_configs").glob("*/*/config.json"):
        assert f"{cfg.parent.parent.name}/{cfg.parent.name}" in readme


def test_every_role_documents_and_specs_each_of_its_variables():
    """Each role: a README naming every default, argument specs naming every default, and only
    role-prefixed variables."""
    for role in sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir()):
        defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
        readme = (role / "README.md").read_text()
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
        spec_options = {name for entry in specs.values() for name in (entry.get("options") or {})}
        for name in defaults:
            assert name.startswith(role.name + "_") or name.startswith(role.name.split("_")[0] + "_"), (role, name)
            assert f"`{name}`" in readme, f"{role.name}/README.md does not list {name}"
            assert name in spec_options, f"{role.name}/meta/argument_specs.yml does not list {name}"
        # Every tasks file used as an entry point (tasks_from) has its own argument spec.
        books = [*(ROOT / "playbooks").glob("*.yml"), *(ROOT / "roles").glob("*/tasks/*.yml")]
        used = [
            tasks_from
            for book in books
            for tasks_from in re.findall(
                rf"name: vllm_fleet\.fleet\.{role.name}\n\s+tasks_from: ([\w-]+)\.yml", book.read_text()
            )
        ]
        for tasks_from in used:
            assert tasks_from in specs, (role.name, tasks_from)
        if role.name in ("vllm_rollout", "vllm_runtime"):
            assert used, f"no entry point of {role.name} found: the pattern above no longer matches the playbooks"


def test_no_role_reads_the_preflight_results_by_name():
    # What a role needs from the plan is one of its own variables, declared in its argument spec and
    # passed by the playbook (issue 14): vllm_probe_plan, vllm_service_models.
    for path in (ROOT / "roles").glob("*/*/*.yml"):
        if path.parent.name in ("tasks", "defaults", "handlers", "vars"):
            assert "vllm_preflight_" not in path.read_text(), path.relative_to(ROOT)


def test_no_role_reads_another_roles_variables():
    # A role's inputs are its own variables (argument spec, README), whose defaults may name another
    # role's: its tasks and templates read only those (issue 14). Setting another role's variable for a
    # role it includes (`vllm_probe_models:` under vars) is passing, not reading.
    roles = sorted(p.name for p in (ROOT / "roles").iterdir() if p.is_dir())
    for role in roles:
        others = "|".join(r for r in roles if r != role)
        for path in [*(ROOT / "roles" / role).glob("tasks/*.yml"), *(ROOT / "roles" / role).glob("templates/*")]:
            read = re.findall(rf"\b(?:{others})_[a-z_]+\b(?!\s*:)", path.read_text())
            assert not read, f"{path.relative_to(ROOT)} reads {read}: make it a {role}_ variable with that default"


def test_playbooks_and_roles_name_roles_by_their_collection():
    # No roles_path in ansible.cfg: a short name would work from no installed copy (issue 14).
    assert not re.search(r"^roles_path", (ROOT / "ansible.cfg").read_text(), flags=re.M)
    books = [
        *(ROOT / "playbooks").glob("*.yml"),
        *(ROOT / "roles").glob("*/tasks/*.yml"),
        *(ROOT / "molecule").rglob("*.yml"),
        *(ROOT / "tests").rglob("*.yml"),
    ]
    roles = "|".join(p.name for p in (ROOT / "roles").iterdir() if p.is_dir())
    for book in books:
        short = re.findall(rf"^\s+(?:- )?(?:role|name): ({roles})\s*$", book.read_text(), flags=re.M)
        assert not short, f"{book.relative_to(ROOT)} names roles without vllm_fleet.fleet: {short}"


def test_every_module_documents_in_valid_yaml_each_option_of_its_argument_spec():
    # ansible-doc and ansible-lint read these strings as YAML; a ": " inside a description line
    # once made two modules' documentation unreadable while every other test passed.
    import ast

    for path in sorted((ROOT / "plugins/modules").glob("*.py")):
        source = path.read_text()
        docs = {
            node.targets[0].id: node.value.value
            for node in ast.parse(source).body
            if isinstance(node, ast.Assign)
            and getattr(node.targets[0], "id", "") in ("DOCUMENTATION", "EXAMPLES", "RETURN")
        }
        assert set(docs) == {"DOCUMENTATION", "EXAMPLES", "RETURN"}, path.name
        parsed = {name: yaml.safe_load(text) for name, text in docs.items()}
        assert parsed["DOCUMENTATION"]["module"] == path.stem
        spec_keys = set(re.findall(r'^\s+"(\w+)": \{\s*"type"', source, flags=re.M))
        options = parsed["DOCUMENTATION"].get("options") or {}
        documented = set(options) | {sub for o in options.values() for sub in (o.get("suboptions") or {})}
        assert documented == spec_keys, path.name


def test_every_lookup_documents_in_valid_yaml():
    # A ": " in a description line made the layout lookup fail to load in every play.
    import ast

    for path in sorted((ROOT / "plugins/lookup").glob("*.py")):
        docs = {
            node.targets[0].id: node.value.value
            for node in ast.parse(path.read_text()).body
            if isinstance(node, ast.Assign)
            and getattr(node.targets[0], "id", "") in ("DOCUMENTATION", "EXAMPLES", "RETURN")
        }
        assert set(docs) == {"DOCUMENTATION", "EXAMPLES", "RETURN"}, path.name
        assert yaml.safe_load(docs["DOCUMENTATION"])["name"] == path.stem
        yaml.safe_load(docs["EXAMPLES"])
        yaml.safe_load(docs["RETURN"])


def test_every_action_plugin_takes_the_options_its_module_documents():
    # plugins/action/archive_stream.py validates its task's arguments on the controller (it may never
    # run the module) with the module's own spec, whose options ansible-doc shows.
    import importlib
    import importlib.util

    for path in sorted((ROOT / "plugins/action").glob("*.py")):
        loader_spec = importlib.util.spec_from_file_location(f"action_{path.stem}", path)
        action = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(action)
        module = importlib.import_module(f"ansible_collections.vllm_fleet.fleet.plugins.modules.{path.stem}")
        assert action.ARGUMENT_SPEC is module.ARGUMENT_SPEC, path.name
        documented = yaml.safe_load(module.DOCUMENTATION)["options"]
        assert set(documented) == set(module.ARGUMENT_SPEC), path.name


def test_ansible_test_units_installs_the_pins_the_project_uses():
    # tests/unit/requirements.txt (ansible-test units) repeats requirements.txt's pins: one may not drift.
    def pins(path):
        lines = (line.split("#")[0].strip() for line in (ROOT / path).read_text().splitlines())
        return dict(line.split("==", 1) for line in lines if "==" in line)

    project, units = pins("requirements.txt"), pins("tests/unit/requirements.txt")
    assert units and {name: project.get(name) for name in units} == units
