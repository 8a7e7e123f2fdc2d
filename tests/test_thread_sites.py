"""Every bare ``asyncio.to_thread`` / ``run_in_executor`` in the kernel, the tools and the
packages is a reviewed site.

Cancelling a task does not stop its thread: work with an effect handed to a bare
``to_thread`` goes on after its call was ended (revoked, expired, its connection closed) and
makes its change after the refusal. Such work runs through ``tools/thread_work.in_thread``
(with ``commit_point`` where the call may be refused before the change). A bare site is allowed
only when its work has no effect (a read), or is the cleanup of a failure (which runs to its
end whoever waits for it). A new bare site fails here until it is reviewed and listed below
with its reason; a listed site that is gone fails too (the list stays true).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "agentix"
AREAS = ("kernel", "tools", "packages")

READ = "a read: no effect to leave half-done or done after a refusal"
CLEANUP = "cleanup after a failure or at the end: it undoes, and runs to its end either way"

#: (module path under src/agentix, enclosing function, the work handed to the thread) -> why bare
ALLOWED: dict[tuple[str, str, str], str] = {
    ("kernel/spawn.py", "_undo_spawn", "shutil.rmtree"): CLEANUP,
    ("kernel/spawn.py", "_undo_spawn", "self.persistent.forget_agent"): CLEANUP,
    ("kernel/snapshots_api.py", "take", "_capture_store"): READ,
    ("kernel/snapshots_api.py", "restore_from", "_resolve"): READ,
    ("kernel/snapshots_api.py", "restore_from", "read_snapshot"): READ,
    ("kernel/snapshots_api.py", "restore_from", "snapshots_made.made"): READ,
    ("kernel/net_exec.py", "run_exec", "tally.room"): READ,  # walks the workspace (the kernel's own count)
    ("kernel/net_exec.py", "run_exec", "tally.recount"): READ,  # the same, after the run
    ("kernel/snapshots_api.py", "restore_from", "_free_name"): READ,
    ("kernel/snapshots_api.py", "restore_from", "_undo"): CLEANUP,
    ("kernel/snapshots_api.py", "restore_from", "shutil.rmtree"): CLEANUP,
    ("kernel/calls_agents.py", "agent_logs", "read"): READ,
    ("kernel/packages_api.py", "run", "shutil.rmtree"): CLEANUP,
    ("kernel/packages_api.py", "list_", "store.list"): READ,
    ("kernel/packages_api.py", "inspect", "store.inspect"): READ,
    ("kernel/packages_api.py", "keys_list", "store.keys.list"): READ,
    ("kernel/packages_api.py", "trust_list", "store.trust.policy"): READ,
    ("kernel/calls_audit.py", "audit_verify", "alog.verify"): READ,
    ("kernel/calls_audit.py", "audit_prove", "alog.prove"): READ,
    ("kernel/persistent.py", "respawn_persistent", "store.persistent_agents"): READ,
    ("kernel/persistent.py", "state_load", "store.load_labelled"): READ + " (its labels are taken only once it is answered)",
    ("tools/files.py", "_run", "fn"): READ + " (the file tools' writes take the in_thread branch beside it)",
    ("tools/memory.py", "memory_query", "store.query"): READ,
    ("tools/skills.py", "skill_read", "catalog.read"): READ,
    # the class fix itself
    ("tools/thread_work.py", "in_thread", "fn"): "in_thread itself: the commit point and the wait",
}


def _sites() -> set[tuple[str, str, str]]:
    found: set[tuple[str, str, str]] = set()
    for area in AREAS:
        for path in sorted((SRC / area).rglob("*.py")):
            rel = str(path.relative_to(SRC))
            tree = ast.parse(path.read_text(), rel)

            def visit(node: ast.AST, fn: str) -> None:
                for child in ast.iter_child_nodes(node):
                    name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else fn
                    if isinstance(child, ast.Call):
                        f = child.func
                        attr = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                        if attr in ("to_thread", "run_in_executor"):
                            args = child.args[1:] if attr == "run_in_executor" else child.args
                            found.add((rel, fn, ast.unparse(args[0]) if args else "?"))
                    visit(child, name)

            visit(tree, "<module>")
    return found


def test_every_bare_thread_hand_off_is_a_reviewed_site() -> None:
    sites = _sites()
    new = sorted(sites - set(ALLOWED))
    assert not new, (
        "work handed to a bare asyncio.to_thread/run_in_executor that nobody reviewed: "
        f"{new}. If it changes anything (a file, the store, a directory), run it through "
        "agentix.tools.thread_work.in_thread (with commit_point() right before its first change); "
        "if it only reads, or is a failure's cleanup, list it in ALLOWED with the reason")
    gone = sorted(set(ALLOWED) - sites)
    assert not gone, f"listed in ALLOWED but no longer in the code (remove them from the list): {gone}"
