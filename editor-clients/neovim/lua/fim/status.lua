-- Stats from the server (shown / accepted / cancelled, latency): the statusline piece and :FimStatus.
local client_mod = require("fim.client")
local text = require("fim.text")

local M = {}

M.method = "fim/stats"

-- Last answer, when it came (ms since start) and whether a request is out; last_ms: the editor's
-- round trip of the latest inline completion request (sent -> answered).
local cache = { stats = nil, at = -math.huge, pending = false, error = nil, last_ms = nil }
local sent = {} -- request id -> vim.uv.hrtime() at send

local function now_ms()
  return vim.uv.now()
end

-- LspRequest fires when a request is sent ("pending"), answered ("complete") or cancelled.
function M.track(client_name)
  vim.api.nvim_create_autocmd("LspRequest", {
    group = vim.api.nvim_create_augroup("fim.latency", { clear = true }),
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      local request = args.data.request
      if not client or client.name ~= client_name or request.method ~= "textDocument/inlineCompletion" then
        return
      end
      local id = args.data.request_id
      if request.type == "pending" then
        sent[id] = vim.uv.hrtime()
      elseif request.type == "complete" and sent[id] then
        cache.last_ms = (vim.uv.hrtime() - sent[id]) / 1e6
        sent[id] = nil
        -- the counts changed too: refresh them for the statusline
        if not cache.pending then
          vim.schedule(function()
            M.fetch(function()
              vim.cmd("redrawstatus")
            end)
          end)
        end
      else
        sent[id] = nil
      end
    end,
  })
end

-- Asks the server; calls done(stats, err) on the main loop. No client: done(nil, message).
function M.fetch(done)
  local client = client_mod.any()
  if not client then
    done(nil, "fim-lsp is not running")
    return
  end
  cache.pending = true
  local ok = client_mod.request(client, M.method, {}, function(err, result)
    cache.pending = false
    cache.at = now_ms()
    if err then
      cache.error = err.message or tostring(err)
      done(cache.stats, cache.error)
      return
    end
    cache.stats, cache.error = result, nil
    done(result, nil)
  end)
  if not ok then
    cache.pending = false
    done(nil, "the request was not sent")
  end
end

-- The statusline component: cached text, refreshed in the background at most every interval_ms.
function M.statusline(interval_ms)
  if not client_mod.any() then
    return ""
  end
  if not cache.pending and now_ms() - cache.at >= interval_ms then
    M.fetch(function()
      vim.cmd("redrawstatus")
    end)
  end
  return text.statusline(cache.stats, cache.last_ms)
end

function M.last()
  return cache.stats, cache.error, cache.last_ms
end

-- :FimStatus
function M.show(mode)
  local client = client_mod.any()
  local info = {
    state = client and "running" or "not running",
    server = client and (client.name .. " (client " .. client.id .. ")") or nil,
    mode = mode,
    last_ms = cache.last_ms,
  }
  M.fetch(function(stats, err)
    local lines = text.status_lines(stats, info)
    if err and client then
      table.insert(lines, "stats: " .. err)
    end
    vim.notify(table.concat(lines, "\n"), err and client and vim.log.levels.WARN or vim.log.levels.INFO)
  end)
end

return M
