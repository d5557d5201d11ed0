-- Options of require("fim").setup(): defaults, merge and checks. Everything the server needs
-- travels in `settings`, unchanged, so this file knows no engine option.
local M = {}

M.defaults = {
  -- How to start the server: an argv list, or a function from vim.lsp.rpc.connect().
  cmd = { "fim-lsp" },
  -- "HOST:PORT" of a fim-lsp already listening on TCP; when set, `cmd` is not started.
  tcp = nil,
  filetypes = { "python", "lua", "javascript", "typescript", "go", "rust", "c", "cpp", "java", "sh" },
  -- Sent as initializationOptions and as the "fim" workspace settings section.
  -- Keys are the server's: worker = { address = ... }, debounceMs, maxLines, engine, enabled, spawnWorker.
  settings = {},
  -- nil: Neovim 0.12's vim.lsp.inline_completion when it exists; false: the plugin's own ghost text.
  native = nil,
  -- Fallback ghost text only (0.12's native client debounces 200 ms by itself).
  debounce_ms = 75,
  -- Insert-mode keys; set one to false to leave that key alone.
  keymaps = {
    accept = "<Tab>",
    accept_word = "<M-Right>",
    accept_line = "<M-Down>",
    dismiss = "<C-]>",
    next = "<M-]>",
    prev = "<M-[>",
  },
  -- The statusline component asks the server for stats at most this often.
  stats_interval_ms = 2000,
}

-- Parses "HOST:PORT" (IPv6 as "[::1]:PORT"); nil and a message when malformed.
function M.parse_tcp(address)
  local host, port = address:match("^%[([^%]]+)%]:(%d+)$")
  if not host then
    host, port = address:match("^([^:]+):(%d+)$")
  end
  port = tonumber(port)
  if not host or not port or port < 1 or port > 65535 then
    return nil, ("fim: tcp must be HOST:PORT, got %q"):format(address)
  end
  return { host = host, port = port }
end

local expected = {
  cmd = { table = true, ["function"] = true },
  tcp = { string = true, ["nil"] = true },
  filetypes = { table = true },
  settings = { table = true },
  debounce_ms = { number = true },
  keymaps = { table = true },
  stats_interval_ms = { number = true },
}

-- vim.validate's signature changed in 0.11: a plain check works on 0.10 to 0.12.
local function check_types(opts)
  for name, types in pairs(expected) do
    local got = type(opts[name])
    if not types[got] then
      local want = vim.tbl_keys(types)
      table.sort(want)
      return ("%s: expected %s, got %s"):format(name, table.concat(want, " or "), got)
    end
  end
end

-- Merges user options over the defaults; returns nil and a message for bad input instead of raising.
function M.resolve(user)
  local opts = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), user or {})
  if user and user.filetypes then
    opts.filetypes = user.filetypes -- a list replaces, it does not merge by index
  end
  if user and user.cmd then
    opts.cmd = user.cmd
  end
  local problem = check_types(opts)
  if problem then
    return nil, "fim: bad option: " .. problem
  end
  if opts.tcp then
    local target, msg = M.parse_tcp(opts.tcp)
    if not target then
      return nil, msg
    end
    opts.tcp_target = target
  end
  return opts
end

return M
