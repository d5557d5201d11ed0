-- Puts (part of) a suggestion into the buffer. A suggestion here is normalised by the caller:
--   { text = string, range = { srow, scol, erow, ecol } | nil (0-based bytes, end exclusive),
--     snippet = string | nil, command = lsp.Command | nil, client_id = integer }
local api = vim.api
local text = require("fim.text")

local M = {}

local function cursor(win)
  local pos = api.nvim_win_get_cursor(win)
  return pos[1] - 1, pos[2]
end

-- Buffer text between the suggestion's range start and the cursor: what the user typed since.
function M.typed(bufnr, item, row, col)
  local r = item.range
  if not r or r[1] ~= row or r[2] > col then
    return ""
  end
  local line = api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
  return line:sub(r[2] + 1, col)
end

-- What is left to show at the cursor.
function M.rest(bufnr, item, row, col)
  return text.remainder(item.text, M.typed(bufnr, item, row, col))
end

local function put(bufnr, win, srow, scol, erow, ecol, str)
  api.nvim_buf_set_text(bufnr, srow, scol, erow, ecol, text.lines(str))
  local row, col = text.end_position(srow, scol, str)
  api.nvim_win_set_cursor(win, { row + 1, col })
end

-- part: "all" replaces the item's range with its text; "word" and "line" insert the next piece of
-- the rest at the cursor. Returns the text that went into the buffer.
function M.insert(bufnr, item, part)
  local win = vim.fn.bufwinid(bufnr)
  local row, col = cursor(win)
  if part == "all" then
    if item.snippet then
      vim.snippet.expand(item.snippet)
      return item.text
    end
    local r = item.range or { row, col, row, col }
    put(bufnr, win, r[1], r[2], r[3], r[4], item.text)
    return item.text
  end
  local rest = M.rest(bufnr, item, row, col)
  local piece = part == "word" and text.next_word(rest) or text.next_line(rest)
  put(bufnr, win, row, col, row, col, piece)
  return piece
end

return M
