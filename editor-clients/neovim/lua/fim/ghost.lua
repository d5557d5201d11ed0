-- Ghost text for Neovim 0.10/0.11 (or `native = false`): request textDocument/inlineCompletion
-- after a pause in typing, draw the rest of the suggestion as extmarks, drop stale answers.
local api = vim.api
local client_mod = require("fim.client")
local apply = require("fim.apply")
local text = require("fim.text")

local M = {}

local ns = api.nvim_create_namespace("fim.ghost")
api.nvim_set_hl(0, "FimGhost", { link = "Comment", default = true })

-- bufnr -> { timer, pending = { client, id }, items, index, client_id, enabled }
local buffers = {}
local debounce_ms = 75

local function state(bufnr)
  if bufnr == 0 then
    bufnr = api.nvim_get_current_buf()
  end
  buffers[bufnr] = buffers[bufnr] or { enabled = true }
  return buffers[bufnr]
end

local function byte_col(line, character, encoding)
  if encoding == "utf-8" then
    return math.min(character, #line)
  end
  if vim.fn.has("nvim-0.11") == 1 then
    return vim.str_byteindex(line, encoding, character, false)
  end
  local ok, col = pcall(vim.str_byteindex, line, character, encoding == "utf-16")
  return ok and col or #line
end

local function byte_range(bufnr, range, encoding)
  local function pos(p)
    local line = api.nvim_buf_get_lines(bufnr, p.line, p.line + 1, false)[1] or ""
    return p.line, byte_col(line, p.character, encoding)
  end
  local srow, scol = pos(range.start)
  local erow, ecol = pos(range["end"])
  return { srow, scol, erow, ecol }
end

-- The shown lsp.InlineCompletionItem in fim.apply's shape, or nil.
local function current(bufnr)
  local s = buffers[bufnr]
  local raw = s and s.items and s.items[s.index]
  local client = raw and vim.lsp.get_client_by_id(s.client_id)
  if not client then
    return nil
  end
  local insert = raw.insertText
  local item = { text = insert, command = raw.command, client_id = s.client_id }
  if type(insert) ~= "string" then
    item.text, item.snippet = insert.value, insert.value
  end
  if raw.range then
    item.range = byte_range(bufnr, raw.range, client.offset_encoding)
  end
  return item
end

function M.clear(bufnr)
  api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
  local s = buffers[bufnr]
  if s then
    s.items, s.index = nil, nil
  end
end

local function cancel(bufnr)
  local s = buffers[bufnr]
  if not s then
    return
  end
  if s.timer then
    s.timer:stop()
  end
  if s.pending then
    client_mod.cancel(s.pending.client, s.pending.id)
    s.pending = nil
  end
end

local function render(bufnr)
  api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
  local item = current(bufnr)
  if not item then
    return
  end
  local pos = api.nvim_win_get_cursor(0)
  local row, col = pos[1] - 1, pos[2]
  local pieces = text.lines(apply.rest(bufnr, item, row, col))
  if #pieces == 1 and pieces[1] == "" then
    return
  end
  local virt_lines = {}
  for i = 2, #pieces do
    virt_lines[#virt_lines + 1] = { { pieces[i], "FimGhost" } }
  end
  api.nvim_buf_set_extmark(bufnr, ns, row, col, {
    virt_text = { { pieces[1], "FimGhost" } },
    virt_text_pos = "inline",
    virt_lines = virt_lines,
    hl_mode = "combine",
  })
end

local function request(bufnr)
  local client = client_mod.get(bufnr)
  local s = state(bufnr)
  if not client or not s.enabled then
    return
  end
  cancel(bufnr)
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = 2 } -- Automatic
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local cursor = api.nvim_win_get_cursor(0)
  local ok, id = client_mod.request(client, "textDocument/inlineCompletion", params, function(err, result)
    s.pending = nil
    local now = api.nvim_win_get_cursor(0)
    local stale = api.nvim_buf_get_changedtick(bufnr) ~= tick or now[1] ~= cursor[1] or now[2] ~= cursor[2]
    if err or not result or stale or api.nvim_get_mode().mode:sub(1, 1) ~= "i" then
      return
    end
    s.items, s.index, s.client_id = result.items or result, 1, client.id
    render(bufnr)
  end, bufnr)
  if ok then
    s.pending = { client = client, id = id }
  end
end

local function schedule(bufnr)
  M.clear(bufnr)
  local s = state(bufnr)
  s.timer = s.timer or vim.uv.new_timer()
  s.timer:stop()
  s.timer:start(
    debounce_ms,
    0,
    vim.schedule_wrap(function()
      if api.nvim_get_current_buf() == bufnr and api.nvim_get_mode().mode:sub(1, 1) == "i" then
        request(bufnr)
      end
    end)
  )
end

function M.attach(bufnr, opts)
  debounce_ms = opts.debounce_ms
  state(bufnr)
  local group = api.nvim_create_augroup("fim.ghost." .. bufnr, { clear = true })
  api.nvim_create_autocmd({ "InsertEnter", "TextChangedI", "CursorMovedI" }, {
    group = group,
    buffer = bufnr,
    callback = function()
      schedule(bufnr)
    end,
  })
  api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, {
    group = group,
    buffer = bufnr,
    callback = function()
      cancel(bufnr)
      M.clear(bufnr)
    end,
  })
end

function M.is_enabled(bufnr)
  return state(bufnr).enabled
end

function M.set_enabled(bufnr, on)
  state(bufnr).enabled = on
  if not on then
    cancel(bufnr)
    M.clear(bufnr)
  end
end

-- Calls on_accept(item) on the next tick (safe in an <expr> mapping); false when nothing is shown.
function M.accept(on_accept)
  local bufnr = api.nvim_get_current_buf()
  local item = current(bufnr)
  if not item then
    return false
  end
  vim.schedule(function()
    M.clear(bufnr)
    on_accept(item)
  end)
  return true
end

function M.dismiss()
  local bufnr = api.nvim_get_current_buf()
  local shown = current(bufnr) ~= nil
  vim.schedule(function()
    cancel(bufnr)
    M.clear(bufnr)
  end)
  return shown
end

function M.cycle(step)
  local bufnr = api.nvim_get_current_buf()
  local s = buffers[bufnr]
  if not (s and s.items and #s.items > 0 and s.index) then
    return
  end
  s.index = (s.index - 1 + step) % #s.items + 1
  render(bufnr)
end

return M
