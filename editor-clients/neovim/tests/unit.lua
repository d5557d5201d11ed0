-- Unit tests of the plugin's helpers, run inside a real Neovim:
--   nvim --headless --clean -l editor-clients/neovim/tests/unit.lua
-- Prints one line per test and "N passed, N failed"; exits 1 on any failure.
local root = vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h:h")
vim.opt.rtp:prepend(root)

local text = require("fim.text")
local config = require("fim.config")
local apply = require("fim.apply")
local client = require("fim.client")

local passed, failed = 0, 0

-- print() in `nvim -l` leaves the last line without its newline
local function say(line)
  io.stdout:write(line, "\n")
end

local function test(name, fn)
  local ok, err = pcall(fn)
  if ok then
    passed = passed + 1
    say("ok   " .. name)
  else
    failed = failed + 1
    say("FAIL " .. name .. ": " .. tostring(err))
  end
end

local function eq(want, got)
  if not vim.deep_equal(want, got) then
    error(("want %s, got %s"):format(vim.inspect(want), vim.inspect(got)), 2)
  end
end

test("remainder drops what was typed since the range start", function()
  eq(" + b", text.remainder("a + b", "a"))
  eq("a + b", text.remainder("a + b", ""))
  eq("x = 1", text.remainder("x = 1", "y")) -- typed text that diverges: show the whole item
end)

test("next_word takes blanks and one word or one run of punctuation", function()
  eq(" return", text.next_word(" return a + b"))
  eq("(", text.next_word("(a, b)"))
  eq("\n    ", text.next_word("\n    return x"))
  eq("foo_bar1", text.next_word("foo_bar1.baz"))
end)

test("next_line takes the rest of this line, or the next line after a break", function()
  eq("a + b", text.next_line("a + b\n    c"))
  eq("\n    c = 1", text.next_line("\n    c = 1\nd"))
  eq("", text.next_line(""))
end)

test("end_position follows inserted line breaks", function()
  eq({ 3, 9 }, { text.end_position(3, 4, "a + b") })
  eq({ 5, 2 }, { text.end_position(3, 4, "x\ny\nzz") })
end)

test("statusline shows last latency and accepted/shown", function()
  eq("fim", text.statusline(nil, nil))
  eq("fim 40 ms", text.statusline(nil, 40.2))
  eq("fim 213 ms 3/10", text.statusline({ accepted = 3, shown = 10 }, 212.6))
  eq("fim - 0/0", text.statusline({}, nil))
end)

test("status_lines reports the acceptance rate and the server's percentiles", function()
  local stats = { shown = 4, accepted = 1, cancelled = 2, latency_ms = { p50 = 100, p95 = 300.4 } }
  local lines = text.status_lines(stats, { state = "running", mode = "native", last_ms = 12 })
  eq({
    "fim: running",
    "mode: native",
    "suggestions shown 4, accepted 1 (25%), cancelled 2",
    "latency: last 12 ms (editor round trip), p50 100 ms, p95 300 ms (server)",
  }, lines)
  stats.unavailable = 3
  stats.worker = { address = "tcp://127.0.0.1:5555", state = "down" }
  lines = text.status_lines(stats, { state = "running", mode = "m" })
  eq({ "worker: tcp://127.0.0.1:5555 (down)", "worker unavailable for 3 request(s)" }, { lines[5], lines[6] })
end)

test("config merges over defaults and replaces lists", function()
  local opts = assert(config.resolve({ filetypes = { "python" }, keymaps = { accept = "<C-l>" } }))
  eq({ "python" }, opts.filetypes)
  eq("<C-l>", opts.keymaps.accept)
  eq("<M-Right>", opts.keymaps.accept_word)
  eq({ "fim-lsp" }, opts.cmd)
end)

test("config reports bad input instead of raising", function()
  local opts, err = config.resolve({ filetypes = "python" })
  eq(nil, opts)
  assert(err:find("filetypes: expected table, got string", 1, true), err)
  opts, err = config.resolve({ tcp = "localhost" })
  eq(nil, opts)
  assert(err:find("HOST:PORT", 1, true), err)
end)

test("config parses tcp targets", function()
  eq({ host = "127.0.0.1", port = 7000 }, assert(config.resolve({ tcp = "127.0.0.1:7000" })).tcp_target)
  eq({ host = "::1", port = 7000 }, config.parse_tcp("[::1]:7000"))
  eq(nil, (config.parse_tcp("127.0.0.1:99999")))
end)

test("the server gets JSON objects for empty settings, and no plugin-only option", function()
  local sent
  local real_start = vim.lsp.start
  vim.lsp.start = function(cfg)
    sent = cfg
  end
  local ok, err = pcall(function()
    -- the README's setup: an empty Lua table is encoded as [] unless the client says otherwise
    client.start(0, assert(config.resolve({ filetypes = { "python" } })))
    eq("{}", vim.json.encode(sent.init_options))
    eq('{"fim":{}}', vim.json.encode(sent.settings))
    client.start(0, assert(config.resolve({ settings = { maxLines = 3, engine = {} } })))
    eq({ maxLines = 3, engine = {} }, vim.json.decode(vim.json.encode(sent.init_options)))
    assert(vim.json.encode(sent.init_options):find('"engine":{}', 1, true))
  end)
  vim.lsp.start = real_start
  assert(ok, err)
end)

-- apply.insert on a real buffer in a real window. A script runs in Normal mode, where the cursor
-- cannot sit past the last character as it does in Insert mode; 'virtualedit' lets it.
vim.o.virtualedit = "onemore"
local function buffer_with(lines, row, col)
  local buf = vim.api.nvim_create_buf(false, true)
  vim.api.nvim_set_current_buf(buf)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.api.nvim_win_set_cursor(0, { row + 1, col })
  return buf
end

local function content(buf)
  return table.concat(vim.api.nvim_buf_get_lines(buf, 0, -1, false), "\n")
end

test("insert all replaces the item's range and moves the cursor to its end", function()
  local buf = buffer_with({ "def add(a, b):", "    return a" }, 1, 12)
  local item = { text = "a + b\n", range = { 1, 11, 1, 12 } }
  eq("a + b\n", apply.insert(buf, item, "all"))
  eq("def add(a, b):\n    return a + b\n", content(buf))
  eq({ 3, 0 }, vim.api.nvim_win_get_cursor(0))
end)

test("insert all without a range inserts at the cursor", function()
  local buf = buffer_with({ "x = (", ")" }, 0, 5)
  apply.insert(buf, { text = "1, 2" }, "all")
  eq("x = (1, 2\n)", content(buf))
end)

test("insert word and line take pieces of what is not typed yet", function()
  local buf = buffer_with({ "    return a" }, 0, 12)
  local item = { text = "a + b\n    c", range = { 0, 11, 0, 12 } }
  eq(" +", apply.insert(buf, item, "word"))
  eq("    return a +", content(buf))
  eq(" b", apply.insert(buf, item, "line")) -- the rest is re-derived from the range each time
  eq("    return a + b", content(buf))
  eq("\n    c", apply.insert(buf, item, "line"))
  eq("    return a + b\n    c", content(buf))
end)

say(("%d passed, %d failed"):format(passed, failed))
vim.cmd(failed == 0 and "qa!" or "cq")
