-- wrk script: each connection waits DELAY_MS between its requests, so 64
-- connections offer a moderate, steady load (about 64 * 1000 / (DELAY_MS +
-- latency) requests/s) instead of saturating the server. Latency measured this
-- way is service time plus a little scheduling, not queueing behind a full core.
-- Usage: wrk ... -s paced.lua URL -- DELAY_MS      (headers from -H still apply)
local ms = 10

function init(args)
  ms = tonumber(args[1] or "10") or 10
end

function delay()
  return ms
end
