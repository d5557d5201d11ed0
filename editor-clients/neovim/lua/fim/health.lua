-- :checkhealth fim: says what is wrong (old Neovim, no fim-lsp, server not running, no worker).
local client_mod = require("fim.client")
local config = require("fim.config")
local status = require("fim.status")

local M = {}

local DEFAULT_ADDRESS = "tcp://127.0.0.1:5555" -- fim-server serve's default bind

local function check_neovim(health)
  local version = vim.version()
  local v = ("%d.%d.%d"):format(version.major, version.minor, version.patch)
  if vim.fn.has("nvim-0.12") == 1 and require("fim.native").available() then
    health.ok(("Neovim %s: native inline completion (vim.lsp.inline_completion)"):format(v))
  elseif vim.fn.has("nvim-0.10") == 1 then
    health.warn(
      ("Neovim %s has no vim.lsp.inline_completion: fim draws the ghost text itself"):format(v),
      { "Neovim 0.12 or newer gives the native inline completion" }
    )
  else
    health.error(("Neovim %s is too old: fim needs 0.10 or newer"):format(v), { "upgrade Neovim" })
  end
end

local function check_server(health, opts)
  if opts.tcp_target then
    health.info(("connects to a running fim-lsp at %s"):format(opts.tcp))
  elseif type(opts.cmd) == "table" then
    local path = vim.fn.exepath(opts.cmd[1])
    if path == "" then
      health.error(("%s not found on PATH"):format(opts.cmd[1]), {
        "pip install fim-server in an environment on PATH",
        "or give the full path: require('fim').setup({ cmd = { '/path/to/fim-lsp' } })",
      })
    else
      health.ok(("server command: %s"):format(path))
    end
  end
  local client = client_mod.any()
  if not client then
    local types = table.concat(opts.filetypes, ", ")
    health.warn("fim-lsp is not running", { "open a file of a configured filetype: " .. types })
    return nil
  end
  local buffers = vim.tbl_count(client.attached_buffers or {})
  health.ok(("fim-lsp is running (client %d, %d buffer(s))"):format(client.id, buffers))
  return client
end

local function worker_address(opts)
  local s = opts.settings or {}
  s = s.fim or s
  return (s.worker and s.worker.address) or s["worker.address"] or DEFAULT_ADDRESS, s.spawnWorker ~= false
end

-- Asks the worker itself with `fim-server status`, so the answer does not depend on the server.
local function check_worker(health, opts)
  local address, spawns = worker_address(opts)
  if vim.fn.executable("fim-server") == 0 then
    health.warn("fim-server is not on PATH: cannot ask the worker at " .. address)
    return
  end
  local argv = { "fim-server", "status", "--connect", address, "--timeout", "2" }
  local result = vim.system(argv, { text = true }):wait(5000)
  if result.code == 0 then
    health.ok(("a worker answers at %s"):format(address))
  elseif spawns then
    health.warn(
      ("no worker answers at %s yet"):format(address),
      { "fim-lsp starts one on the first request (spawnWorker); the first suggestion waits for the model to load" }
    )
  else
    health.error(("no worker answers at %s and spawnWorker is off"):format(address), {
      "start one: fim-server serve --bind " .. address,
    })
  end
end

local function check_stats(health, client)
  local answer = client_mod.request_sync(client, status.method, {}, 2000)
  if not answer or answer.err then
    health.warn(("%s failed: %s"):format(status.method, answer and answer.err and answer.err.message or "timeout"))
    return
  end
  local info = { state = "running", mode = require("fim").mode(), last_ms = select(3, status.last()) }
  for _, line in ipairs(require("fim.text").status_lines(answer.result, info)) do
    health.info(line)
  end
end

function M.check()
  local health = vim.health
  health.start("fim")
  check_neovim(health)
  local opts = require("fim").state.opts
  if not opts then
    health.warn("require('fim').setup() has not been called; checking the defaults")
    opts = config.resolve({})
  end
  local client = check_server(health, opts)
  check_worker(health, opts)
  if client then
    check_stats(health, client)
  end
end

return M
