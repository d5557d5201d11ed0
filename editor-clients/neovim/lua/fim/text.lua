-- Pure text helpers shared by the native and the fallback paths (no editor state: unit-tested).
local M = {}

-- Splits on "\n" keeping empty pieces: "a\n" -> { "a", "" } (the shape nvim_buf_set_text wants).
function M.lines(text)
  return vim.split(text, "\n", { plain = true })
end

-- The part of a suggestion not yet on screen. `typed` is the buffer text between the item's range
-- start and the cursor; a suggestion that does not start with it is shown whole at the cursor.
function M.remainder(insert_text, typed)
  if typed ~= "" and insert_text:sub(1, #typed) == typed then
    return insert_text:sub(#typed + 1)
  end
  return insert_text
end

-- The next word of `rest`: a line break with the next line's indentation, or leading blanks and one
-- run of word characters (or of punctuation).
function M.next_word(rest)
  local piece = rest:match("^\n[ \t]*")
    or rest:match("^[ \t]*[%w_]+")
    or rest:match("^[ \t]*[^%w_%s]+")
    or rest:match("^[ \t]+")
  return piece or rest:sub(1, 1)
end

-- The rest of the current line, or (when `rest` starts with a line break) the next whole line.
function M.next_line(rest)
  if rest:sub(1, 1) == "\n" then
    return "\n" .. (rest:sub(2):match("^[^\n]*"))
  end
  return rest:match("^[^\n]*")
end

-- Where the cursor lands after inserting `text` at (row, col), both 0-based bytes.
function M.end_position(row, col, text)
  local pieces = M.lines(text)
  local last = pieces[#pieces]
  if #pieces == 1 then
    return row, col + #last
  end
  return row + #pieces - 1, #last
end

local function ms(value)
  if type(value) ~= "number" then
    return "-"
  end
  return ("%d ms"):format(math.floor(value + 0.5))
end

-- One short statusline piece: the editor's last round trip and accepted/shown from the server's
-- fim/stats, e.g. "fim 212 ms 3/10".
function M.statusline(stats, last_ms)
  if not stats then
    return last_ms and ("fim " .. ms(last_ms)) or "fim"
  end
  return ("fim %s %d/%d"):format(ms(last_ms), stats.accepted or 0, stats.shown or 0)
end

-- The lines :FimStatus prints. info: { state, server?, mode, last_ms? }.
function M.status_lines(stats, info)
  local out = { ("fim: %s"):format(info.state) }
  if info.server then
    table.insert(out, ("server: %s"):format(info.server))
  end
  table.insert(out, ("mode: %s"):format(info.mode))
  if stats then
    local shown, accepted = stats.shown or 0, stats.accepted or 0
    local rate = shown > 0 and (100 * accepted / shown) or 0
    local counts = "suggestions shown %d, accepted %d (%.0f%%), cancelled %d"
    table.insert(out, counts:format(shown, accepted, rate, stats.cancelled or 0))
    local latency = stats.latency_ms or {}
    local line = "latency: last %s (editor round trip), p50 %s, p95 %s (server)"
    table.insert(out, line:format(ms(info.last_ms), ms(latency.p50), ms(latency.p95)))
    if type(stats.worker) == "table" then
      table.insert(out, ("worker: %s (%s)"):format(stats.worker.address or "?", stats.worker.state or "?"))
    end
    if stats.unavailable and stats.unavailable > 0 then
      table.insert(out, ("worker unavailable for %d request(s)"):format(stats.unavailable))
    end
  end
  return out
end

return M
