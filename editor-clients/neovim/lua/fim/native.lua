-- Neovim 0.12+: vim.lsp.inline_completion requests, debounces and draws the ghost text; this file
-- only enables it per buffer and adds partial accept, dismiss and cycling on top of its public API.
local M = {}

local ic = vim.lsp.inline_completion

function M.available()
  return ic ~= nil and ic.get ~= nil and ic.select ~= nil
end

function M.attach(bufnr)
  ic.enable(true, { bufnr = bufnr })
end

function M.is_enabled(bufnr)
  return ic.is_enabled({ bufnr = bufnr })
end

function M.set_enabled(bufnr, on)
  ic.enable(on, { bufnr = bufnr })
end

-- vim.lsp.inline_completion.Item (vim.Range, 0-based bytes) -> the shape fim.apply takes.
local function normalize(item)
  local r = item.range
  local out = {
    text = item.insert_text,
    range = r and { r.start.row, r.start.col, r.end_.row, r.end_.col } or nil,
    command = item.command,
    client_id = item.client_id,
  }
  if type(item.insert_text) ~= "string" then
    out.snippet = item.insert_text.value
    out.text = item.insert_text.value
  end
  return out
end

-- Calls on_accept(item) with the shown suggestion (scheduled by Neovim, so this is safe in an
-- <expr> mapping); false when nothing is shown.
function M.accept(on_accept)
  return ic.get({
    on_accept = function(item)
      on_accept(normalize(item))
    end,
  })
end

-- get() with a no-op handler hides the suggestion and cancels pending requests, which is the
-- public way to dismiss.
function M.dismiss()
  return ic.get({ on_accept = function() end })
end

function M.cycle(step)
  ic.select({ count = step })
end

return M
