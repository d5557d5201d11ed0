-- require("fim").setup({...}): start fim-lsp for chosen filetypes, show its suggestions as ghost
-- text (Neovim 0.12's vim.lsp.inline_completion, or fim.ghost on 0.10/0.11), keymaps, commands.
local api = vim.api
local config = require("fim.config")
local client_mod = require("fim.client")
local apply = require("fim.apply")
local status = require("fim.status")

local M = {}

-- opts: resolved options; ui: fim.native or fim.ghost; last_accepted: { text, part } for tests
-- and :FimStatus; problem: why the server is not running (shown once, and by :checkhealth fim).
M.state = { opts = nil, ui = nil, last_accepted = nil, problem = nil }

local function notify_once(msg)
  if M.state.problem ~= msg then
    M.state.problem = msg
    vim.notify(msg, vim.log.levels.WARN)
  end
end

function M.mode()
  if not M.state.ui then
    return "off"
  end
  return M.state.ui == require("fim.ghost") and "ghost text (fim)" or "native (vim.lsp.inline_completion)"
end

local function on_accept(part)
  return function(item)
    local inserted = apply.insert(api.nvim_get_current_buf(), item, part)
    M.state.last_accepted = { text = inserted, part = part, item_text = item.text }
    local client = vim.lsp.get_client_by_id(item.client_id)
    if client and part == "all" then
      client_mod.exec(client, item.command, api.nvim_get_current_buf())
    end
  end
end

-- Public actions; each returns true when it did something (so a mapping can fall back to its key).
function M.accept()
  return M.state.ui ~= nil and M.state.ui.accept(on_accept("all"))
end

function M.accept_word()
  return M.state.ui ~= nil and M.state.ui.accept(on_accept("word"))
end

function M.accept_line()
  return M.state.ui ~= nil and M.state.ui.accept(on_accept("line"))
end

function M.dismiss()
  return M.state.ui ~= nil and M.state.ui.dismiss()
end

function M.next()
  if M.state.ui then
    M.state.ui.cycle(1)
  end
end

function M.prev()
  if M.state.ui then
    M.state.ui.cycle(-1)
  end
end

function M.statusline()
  return status.statusline(M.state.opts and M.state.opts.stats_interval_ms or 2000)
end

local function map_keys(bufnr, keymaps)
  local function fallback(action, key)
    return function()
      if action() then
        return ""
      end
      return key
    end
  end
  local actions = {
    accept = M.accept,
    accept_word = M.accept_word,
    accept_line = M.accept_line,
    dismiss = M.dismiss,
  }
  for name, action in pairs(actions) do
    local key = keymaps[name]
    if key then
      vim.keymap.set("i", key, fallback(action, key), { buffer = bufnr, expr = true, desc = "fim: " .. name })
    end
  end
  for name, action in pairs({ next = M.next, prev = M.prev }) do
    if keymaps[name] then
      vim.keymap.set("i", keymaps[name], action, { buffer = bufnr, desc = "fim: " .. name })
    end
  end
end

local function on_attach(bufnr)
  M.state.ui.attach(bufnr, M.state.opts)
  map_keys(bufnr, M.state.opts.keymaps)
end

local function start(bufnr)
  local problem = client_mod.start_problem(M.state.opts)
  if problem then
    notify_once("fim: " .. problem .. " (:checkhealth fim)")
    return
  end
  client_mod.start(bufnr, M.state.opts)
end

local function pick_ui(opts)
  local native = require("fim.native")
  if opts.native ~= false and native.available() then
    return native
  end
  return require("fim.ghost")
end

function M.toggle()
  local bufnr = api.nvim_get_current_buf()
  if not M.state.ui then
    return
  end
  local on = not M.state.ui.is_enabled(bufnr)
  M.state.ui.set_enabled(bufnr, on)
  vim.notify("fim: suggestions " .. (on and "on" or "off") .. " in this buffer")
end

function M.restart()
  for _, client in ipairs(vim.lsp.get_clients({ name = client_mod.name })) do
    client_mod.stop(client)
  end
  M.state.problem = nil
  vim.defer_fn(function()
    for _, bufnr in ipairs(api.nvim_list_bufs()) do
      if api.nvim_buf_is_loaded(bufnr) and vim.tbl_contains(M.state.opts.filetypes, vim.bo[bufnr].filetype) then
        start(bufnr)
      end
    end
  end, 500)
end

local function create_commands()
  api.nvim_create_user_command("FimStatus", function()
    status.show(M.mode())
  end, { desc = "fim: server state, acceptance and latency" })
  api.nvim_create_user_command("FimToggle", M.toggle, { desc = "fim: suggestions on/off in this buffer" })
  api.nvim_create_user_command("FimRestart", M.restart, { desc = "fim: restart fim-lsp" })
end

function M.setup(user_opts)
  local opts, err = config.resolve(user_opts)
  if not opts then
    vim.notify(err, vim.log.levels.ERROR)
    return false
  end
  M.state.opts = opts
  M.state.ui = pick_ui(opts)
  local group = api.nvim_create_augroup("fim", { clear = true })
  api.nvim_create_autocmd("FileType", {
    group = group,
    pattern = opts.filetypes,
    callback = function(args)
      start(args.buf)
    end,
  })
  api.nvim_create_autocmd("LspAttach", {
    group = group,
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if client and client.name == client_mod.name then
        on_attach(args.buf)
      end
    end,
  })
  create_commands()
  status.track(client_mod.name)
  -- Buffers opened before setup() ran.
  for _, bufnr in ipairs(api.nvim_list_bufs()) do
    if api.nvim_buf_is_loaded(bufnr) and vim.tbl_contains(opts.filetypes, vim.bo[bufnr].filetype) then
      start(bufnr)
    end
  end
  return true
end

return M
