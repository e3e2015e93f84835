-- wrk script: every request carries the next token from a file (one per line),
-- cycling, so consecutive requests never reuse a token until the file wraps.
-- Usage: wrk ... -s tokens.lua URL -- TOKENS_FILE [START_INDEX]
-- Requests are formatted once in init(), so the load generator spends its time
-- sending, not building strings.
local reqs = {}
local n = 0
local i = 0

function init(args)
  local file = args[1]
  if not file then error("tokens.lua: give the tokens file after --") end
  for line in io.lines(file) do
    if #line > 0 then
      n = n + 1
      reqs[n] = wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. line })
    end
  end
  if n == 0 then error("tokens.lua: no tokens in " .. file) end
  i = (tonumber(args[2] or "0") or 0) % n
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end
