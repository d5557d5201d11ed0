-- The LSP client of fim-lsp: start or connect, find it, and the request calls whose signature
-- changed between Neovim 0.10 (client.request) and 0.11+ (client:request).
local M = {}

M.name = "fim"

local has_011 = vim.fn.has("nvim-0.11") == 1

function M.get(bufnr)
  return vim.lsp.get_clients({ name = M.name, bufnr = bufnr })[1]
end

function M.any()
  return vim.lsp.get_clients({ name = M.name })[1]
end

-- The server command vim.lsp.start() takes: an argv list, or a connect function for TCP.
function M.server_cmd(opts)
  if opts.tcp_target then
    return vim.lsp.rpc.connect(opts.tcp_target.host, opts.tcp_target.port)
  end
  return opts.cmd
end

-- Why the server cannot start, or nil. Checked before vim.lsp.start, which would raise instead.
function M.start_problem(opts)
  if opts.tcp_target or type(opts.cmd) == "function" then
    return nil
  end
  if vim.fn.executable(opts.cmd[1]) == 0 then
    return ("%s is not on PATH (pip install the fim-server package, or set cmd)"):format(opts.cmd[1])
  end
end

-- The settings as they go on the wire. Every table in them is a JSON object, but an empty Lua
-- table is encoded as an array ([]), which the server would report as a bad setting: empty
-- tables become vim.empty_dict(), which is encoded as {}.
function M.wire_settings(settings)
  if type(settings) ~= "table" then
    return settings
  end
  if next(settings) == nil then
    return vim.empty_dict()
  end
  local out = {}
  for key, value in pairs(settings) do
    out[key] = M.wire_settings(value)
  end
  return out
end

-- Starts (or reuses) the client for one buffer; returns the client id or nil. Only opts.settings
-- reaches the server: the other options (filetypes, keymaps, ...) are the plugin's own.
function M.start(bufnr, opts)
  local settings = M.wire_settings(opts.settings)
  return vim.lsp.start({
    name = M.name,
    cmd = M.server_cmd(opts),
    root_dir = vim.fs.root(bufnr, { ".git" }) or vim.uv.cwd(),
    init_options = settings,
    settings = { fim = settings },
  }, { bufnr = bufnr })
end

function M.request(client, method, params, handler, bufnr)
  if has_011 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

function M.cancel(client, id)
  if has_011 then
    return client:cancel_request(id)
  end
  return client.cancel_request(id)
end

function M.stop(client)
  if has_011 then
    client:stop()
  else
    client.stop()
  end
end

function M.request_sync(client, method, params, timeout_ms, bufnr)
  if has_011 then
    return client:request_sync(method, params, timeout_ms, bufnr)
  end
  return client.request_sync(method, params, timeout_ms, bufnr)
end

-- Runs an item's server command (the server counts acceptances with it).
function M.exec(client, command, bufnr)
  if not command then
    return
  end
  if has_011 then
    client:exec_cmd(command, { bufnr = bufnr })
  else
    client.request("workspace/executeCommand", command, function() end, bufnr)
  end
end

return M
