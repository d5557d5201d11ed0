"""llama.vim, unmodified, in a real headless Neovim 0.12, against `fim-server http` and a real worker.

The plugin is used as a user installs it: on the runtimepath, its endpoint left at its default
path (`/infill`), only the port and the user-level settings `n_predict` and `show_info` set in
g:llama_config. Typing in insert mode triggers its request (CursorMovedI, curl); its ghost text is
its `vt_fim` extmark; Tab is its own mapping to accept. Prompts are tried in turn until the
bundled model suggests something visible (support.PROMPTS).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from .http_front import http_server, http_stats  # noqa: F401  (a fixture)
from .support import PROMPTS, REPO, wait_for

pytestmark = pytest.mark.e2e

pynvim = pytest.importorskip("pynvim", reason="pynvim drives Neovim: pip install pynvim")

LLAMA_VIM = Path(os.environ.get("LLAMA_VIM_DIR", REPO.parent / "shared" / "clients" / "llama.vim"))
SUGGESTION_WAIT_S = 90        # cold worker on a busy 2-core CPU

INIT = """
vim.opt.rtp:prepend({plugin})
vim.o.swapfile = false
vim.g.llama_config = {{ endpoint_fim = {endpoint}, n_predict = 16, show_info = 0 }}
"""

# llama.vim's hint as drawn: the first line's virtual text and the virtual lines below it
READ_HINT = """
local ns = vim.api.nvim_get_namespaces()["vt_fim"]
if not ns then return nil end
local first, rest = nil, {}
for _, mark in ipairs(vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })) do
  local d = mark[4]
  if d.virt_text and #d.virt_text > 0 then first = d.virt_text[1][1] end
  for _, line in ipairs(d.virt_lines or {}) do rest[#rest + 1] = line[1][1] end
end
if first == nil then return nil end
return { first = first, rest = rest }
"""


@contextmanager
def open_editor(tmp_path: Path, endpoint: str):
    from .test_neovim import attach, nvim_binary

    if not (LLAMA_VIM / "autoload" / "llama.vim").is_file():
        pytest.skip(f"llama.vim not found at {LLAMA_VIM} (set LLAMA_VIM_DIR)")
    init = tmp_path / "init.lua"
    init.write_text(INIT.format(plugin=json.dumps(str(LLAMA_VIM)), endpoint=json.dumps(endpoint)))
    source = tmp_path / "example.py"
    source.write_text("")
    sock = tmp_path / "nvim.sock"
    proc = subprocess.Popen([nvim_binary(), "--headless", "-i", "NONE", "-n", "-u", str(init), "--listen", str(sock),
                             str(source)], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        nvim = wait_for(lambda: attach(sock), 30, "Neovim's socket")
        wait_for(lambda: nvim.exec_lua("return vim.fn.exists('*llama#fim') == 1"), 30, "llama.vim to load")
        yield nvim
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def buffer_text(nvim) -> str:
    return "\n".join(nvim.current.buffer[:])


def type_until_hint(nvim, base: str) -> tuple[str, dict]:
    """Types each prompt until llama.vim shows a hint with something visible in it."""
    for prefix, typed in PROMPTS:
        nvim.input("<Esc>")
        nvim.current.buffer[:] = prefix.split("\n")
        nvim.exec_lua("vim.api.nvim_win_set_cursor(0, { vim.api.nvim_buf_line_count(0), 0 })")
        answered = http_stats(base)["http"]["answered"]
        nvim.input("A" + typed)
        expected = prefix + typed
        wait_for(lambda: buffer_text(nvim) == expected, 10, "the typed text")
        deadline = time.monotonic() + SUGGESTION_WAIT_S
        while time.monotonic() < deadline:
            hint = nvim.exec_lua(READ_HINT)
            if hint and (hint["first"].strip() or any(line.strip() for line in hint["rest"])):
                return expected, hint
            if http_stats(base)["http"]["answered"] > answered:      # answered, but nothing to show
                time.sleep(1.0)
                if not (nvim.exec_lua(READ_HINT) or {}).get("first", "").strip():
                    break
            time.sleep(0.2)
        else:
            pytest.fail(f"no answer from the server in {SUGGESTION_WAIT_S} s")
    pytest.fail(f"no prompt got a visible suggestion: {PROMPTS}")


def test_llama_vim_shows_a_suggestion_from_fim_server_http_and_tab_accepts_it(http_server, tmp_path):
    with open_editor(tmp_path, f"{http_server}/infill") as nvim:
        before, hint = type_until_hint(nvim, http_server)
        nvim.input("<Tab>")
        wait_for(lambda: buffer_text(nvim) != before, 10, "Tab to insert the suggestion")
        assert buffer_text(nvim) == "\n".join([before + hint["first"], *hint["rest"]])
    stats = http_stats(http_server)
    assert stats["http"]["answered"] >= 1 and stats["worker"]["served"] >= 1
