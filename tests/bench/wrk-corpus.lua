-- wrk script: replays the signed deliveries of a corpus written by `paystate simulate --corpus PREFIX`,
-- each wrk thread its own file (PREFIX.<thread index>), in order, wrapping around at the end (a replayed
-- delivery is a duplicate, which a receiver must take too). Every server under test gets the same requests.
--   CORPUS=PREFIX wrk -t2 -c16 -d15s --latency -s tests/bench/wrk-corpus.lua http://127.0.0.1:PORT
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  local f = assert(io.open(os.getenv("CORPUS") .. "." .. id, "rb"))
  local data = f:read("*a")
  f:close()
  reqs = {}
  local pos = 1
  while pos <= #data do
    local tab = string.find(data, "\t", pos, true)
    local nl = string.find(data, "\n", tab, true)
    local sig = string.sub(data, pos, tab - 1)
    local len = tonumber(string.sub(data, tab + 1, nl - 1))
    local body = string.sub(data, nl + 1, nl + len)
    reqs[#reqs + 1] = wrk.format("POST", "/webhooks/stripe",
      { ["Content-Type"] = "application/json", ["Stripe-Signature"] = sig }, body)
    pos = nl + len + 2
  end
  sent = 0
end

function request()
  sent = sent + 1
  return reqs[(sent - 1) % #reqs + 1]
end
