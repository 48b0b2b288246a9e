-- Lua step: format a heading.
return {
  heading = function(title, count)
    local noun = count == 1 and "item" or "items"
    return string.format("%s (%d %s)", string.upper(title), count, noun)
  end,
}
