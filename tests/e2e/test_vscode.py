"""The VS Code extension in a real VS Code (code-server) in headless Chromium, with the real
fim-lsp and worker: install the .vsix, open a Python file, type, see the ghost text, accept it
with Tab, save, and check the file on disk; then ask for the stats with the extension's command.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from .support import ENGINE, PROMPTS, REPO, free_port, wait_for

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")

VSIX = REPO / "editor-clients" / "vscode" / "fim-vscode.vsix"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SUGGESTION_WAIT_S = 90        # cold worker on a busy 2-core CPU
EMPTY_GRACE_S = 5             # a new round trip and no ghost text this long after: an empty answer
GHOST = ".editor-group-container .ghost-text-decoration, .editor-group-container .ghost-text"
# Keeps the editor quiet so that only the extension's inline suggestion shows.
EDITOR_SETTINGS = {
    "workbench.startupEditor": "none",
    "workbench.secondarySideBar.defaultVisibility": "hidden",
    "workbench.editor.enablePreview": False,
    "workbench.tips.enabled": False,
    "security.workspace.trust.enabled": False,
    "telemetry.telemetryLevel": "off",
    "extensions.autoCheckUpdates": False,
    "extensions.autoUpdate": False,
    "chat.disableAIFeatures": True,
    "editor.inlineSuggest.enabled": True,
    "editor.inlineSuggest.syntaxHighlightingEnabled": False,
    "editor.quickSuggestions": {"other": "off", "comments": "off", "strings": "off"},
    "editor.suggestOnTriggerCharacters": False,
    "editor.wordBasedSuggestions": "off",
    "editor.autoClosingBrackets": "never",
    "editor.autoClosingQuotes": "never",
    "editor.minimap.enabled": False,
}


def required(path: str | None, what: str) -> str:
    if not path or not Path(path).exists():
        pytest.skip(f"{what} not found; .ci/e2e installs it (../shared/notes/real-editors-offline.md)")
    return path


def code_server() -> str:
    return required(os.environ.get("CODE_SERVER") or shutil.which("code-server"), "code-server (CODE_SERVER)")


def chromium() -> str:
    return required(os.environ.get("CHROMIUM", "/usr/bin/chromium"), "Chromium (CHROMIUM)")


def vsix() -> Path:
    if not VSIX.exists():
        pytest.skip(f"{VSIX.name} not built: cd editor-clients/vscode && npm ci && npm run package")
    return VSIX


@contextmanager
def running_code_server(tmp_path: Path, settings: dict):
    """code-server on a free loopback port with the .vsix installed; yields (url, project dir)."""
    user, extensions, project = tmp_path / "user", tmp_path / "extensions", tmp_path / "project"
    (user / "User").mkdir(parents=True)
    (user / "User" / "settings.json").write_text(json.dumps({**EDITOR_SETTINGS, **settings}, indent=2))
    project.mkdir()
    for i, (prefix, _typed) in enumerate(PROMPTS):
        (project / f"p{i}.py").write_text(prefix)
    dirs = ["--user-data-dir", str(user), "--extensions-dir", str(extensions)]
    subprocess.run([code_server(), *dirs, "--install-extension", str(vsix())], check=True,
                   capture_output=True, timeout=300)
    port = free_port()
    log = open(tmp_path / "code-server.log", "wb")
    proc = subprocess.Popen([code_server(), "--auth", "none", "--bind-addr", f"127.0.0.1:{port}",
                             "--disable-telemetry", "--disable-update-check", *dirs, str(project)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: healthy(url, proc, tmp_path / "code-server.log"), 120, "code-server to listen")
        yield url, project
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def healthy(url: str, proc: subprocess.Popen, log: Path) -> bool:
    if proc.poll() is not None:
        pytest.fail(f"code-server exited with {proc.returncode}: {log.read_text()[-2000:]}")
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def status_text(page) -> str:
    """The fim status bar item's text ("" until the extension shows it)."""
    return page.evaluate("""() => {
        const item = [...document.querySelectorAll('.statusbar-item')]
            .find(e => /^fim\\b/.test(e.innerText.trim()));
        return item ? item.innerText.trim() : "";
    }""")


def ghost_text(page) -> str:
    # Monaco draws spaces in ghost text as non-breaking spaces; multi-line ghost text is one
    # element per line.
    parts = page.eval_on_selector_all(GHOST, """els => els.flatMap(e => {
        const lines = [...e.querySelectorAll('.view-line')];
        return lines.length ? lines.map(l => l.textContent) : [e.textContent];
    })""")
    return "\n".join(parts).replace("\u00a0", " ")


def open_file(page, name: str) -> None:
    page.get_by_role("treeitem", name=name).dblclick()
    page.wait_for_selector(f".tab.active[aria-label*='{name}']", timeout=60_000)
    page.click(".editor-group-container .monaco-editor .view-lines")
    page.keyboard.press("Control+End")


def type_until_suggestion(page) -> tuple[int, str]:
    """Tries PROMPTS (one file each); returns (prompt index, ghost text) of the first suggestion."""
    for i, (_prefix, typed) in enumerate(PROMPTS):
        open_file(page, f"p{i}.py")
        before = status_text(page)
        page.keyboard.type(typed)
        ghost = wait_for_ghost(page, before)
        if ghost:
            return i, ghost
    pytest.fail(f"no prompt got a non-empty suggestion: {PROMPTS}")


def wait_for_ghost(page, status_before: str) -> str | None:
    deadline = time.monotonic() + SUGGESTION_WAIT_S
    answered_at = None
    while time.monotonic() < deadline:
        ghost = ghost_text(page)
        if ghost:
            return ghost
        if answered_at is None and status_text(page) != status_before:
            answered_at = time.monotonic()
        if answered_at is not None and time.monotonic() - answered_at > EMPTY_GRACE_S:
            return None               # the server answered, nothing showed: next prompt
        time.sleep(0.2)
    pytest.fail(f"no answer from the server in {SUGGESTION_WAIT_S} s")


def run_command(page, title: str) -> None:
    page.keyboard.press("F1")
    page.keyboard.type(title)
    page.wait_for_selector(f".quick-input-list .monaco-list-row[aria-label*='{title}']", timeout=10_000)
    page.keyboard.press("Enter")


def test_tab_accepts_the_ghost_text(worker, fim_lsp, tmp_path):
    settings = {"fim.server.path": fim_lsp, "fim.worker.address": worker, "fim.spawnWorker": False,
                "fim.engine": ENGINE}
    with running_code_server(tmp_path, settings) as (url, project):
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium(), headless=True, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1000, "height": 420})
            page.goto(f"{url}/?folder={project}")
            page.wait_for_selector(".monaco-workbench", timeout=120_000)
            wait_for(lambda: status_text(page) == "fim", 60, "the extension's server to start")

            i, ghost = type_until_suggestion(page)
            prefix, typed = PROMPTS[i]
            shots = os.environ.get("FIM_E2E_SCREENSHOTS")
            if shots:
                page.screenshot(path=str(Path(shots) / "vscode.png"))
            page.keyboard.press("Tab")
            wait_for(lambda: not ghost_text(page), 10, "Tab to take the ghost text")
            page.keyboard.press("Control+s")
            saved = project / f"p{i}.py"
            wait_for(lambda: saved.read_text() not in (prefix, prefix + typed), 15, "the accepted text on disk")
            assert saved.read_text() == prefix + typed + ghost

            # the item's fim.accept command reached the server; the command shows the counts
            run_command(page, "fim: Show Stats")
            toast = page.wait_for_selector(".notification-toast", timeout=15_000)
            assert re.search(r"suggestions shown [1-9]\d*, accepted 1 ", toast.inner_text()), toast.inner_text()
            wait_for(lambda: re.fullmatch(r"fim \d+ ms 1/\d+", status_text(page)), 10,
                     "the status bar to show the last latency and 1 accepted")

            run_command(page, "fim: Toggle Suggestions")
            wait_for(lambda: status_text(page) == "fim off", 10, "the status bar to say off")
            run_command(page, "fim: Toggle Suggestions")
            wait_for(lambda: status_text(page).startswith("fim "), 10, "the status bar to come back")
            run_command(page, "fim: Restart Server")
            wait_for(lambda: status_text(page) == "fim", 60, "a fresh server (no stats yet)")
            browser.close()
