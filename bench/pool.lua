-- wrk script for bench/compare: walks a pool of single-use values minted
-- beforehand (authorization codes, refresh tokens), one value a request, each
-- used once. From the environment:
--   POOL_FILE     one value a line
--   POOL_BODY     the form body, with %s where the value goes
--   POOL_THREADS  wrk's -t (the pool is split between the threads)
--   BASIC_AUTH    base64("CLIENT_ID:CLIENT_SECRET")
--   POOL_SAVE     optional: a JSON string field of the answers to keep
--                 (refresh_token), appended to POOL_SAVE_OUT.<thread number>
--   POOL_HEADER   optional: the value goes in this header (a DPoP proof)
--                 instead of the body, which is then POOL_BODY as it is
--   POOL_METHOD   optional: GET sends no body (default POST)
--   POOL_AUTH     optional: the whole Authorization header ("DPoP <token>")
--                 instead of Basic
-- A thread whose share is spent stops (answers still in flight then are
-- not counted). wrk still divides by the whole -d
-- then, so done() prints the rate over the time the pool lasted
-- ("pool: ok N in S s"), which bench/compare uses instead.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } hg_pool_timespec;
int clock_gettime(int clk_id, hg_pool_timespec *tp);
]]
local ts = ffi.new("hg_pool_timespec")
local function now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

local threads = {}
local created = 0
function setup(thread)
  thread:set("id", created)
  created = created + 1
  table.insert(threads, thread)
end

local pool = {}
local next_value = 1
local method = os.getenv("POOL_METHOD") or "POST"
local in_header = os.getenv("POOL_HEADER")
if in_header == "" then in_header = nil end
local authorization = os.getenv("POOL_AUTH")
if authorization == nil or authorization == "" then
  authorization = "Basic " .. os.getenv("BASIC_AUTH")
end
local headers = { ["Authorization"] = authorization }
if method ~= "GET" then
  headers["Content-Type"] = "application/x-www-form-urlencoded"
end
local template = os.getenv("POOL_BODY") or ""
-- Read by done() through thread:get.
ok, bad, spent, first, last = 0, 0, 0, nil, nil

local save_pattern, saved
function init(args)
  local field = os.getenv("POOL_SAVE")
  if field and field ~= "" then
    save_pattern = '"' .. field .. '":"([^"]+)"'
    saved = assert(io.open(os.getenv("POOL_SAVE_OUT") .. "." .. id, "a"))
    saved:setvbuf("line")
  end
  local share = tonumber(os.getenv("POOL_THREADS") or "1")
  local i = 0
  for line in io.lines(os.getenv("POOL_FILE")) do
    if line ~= "" then
      if i % share == id then pool[#pool + 1] = line end
      i = i + 1
    end
  end
end

local function escape(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

function request()
  local value = pool[next_value]
  if value == nil then
    spent = 1
    if saved then saved:flush() end
    wrk.thread:stop()
    -- Something harmless for the connection to send before the thread
    -- stops; its answer is never read.
    return wrk.format("GET", "/healthz")
  end
  next_value = next_value + 1
  first = first or now()
  if in_header then
    headers[in_header] = value
    return wrk.format(method, nil, headers, method ~= "GET" and template or nil)
  end
  return wrk.format(method, nil, headers, template:format(escape(value)))
end

function response(status, hdrs, body)
  if spent == 1 then return end
  if status == 200 then
    ok = ok + 1
    last = now()
    if save_pattern then
      local value = body:match(save_pattern)
      if value then saved:write(value, "\n") end
    end
  else
    bad = bad + 1
    if bad <= 3 then io.stderr:write("unexpected answer " .. status .. ": " .. body:sub(1, 200) .. "\n") end
  end
end

function done(summary, latency, requests)
  local total_ok, total_bad, any_spent, from, to = 0, 0, false, nil, nil
  for _, t in ipairs(threads) do
    total_ok = total_ok + (t:get("ok") or 0)
    total_bad = total_bad + (t:get("bad") or 0)
    any_spent = any_spent or t:get("spent") == 1
    local f, l = t:get("first"), t:get("last")
    if f and (from == nil or f < from) then from = f end
    if l and (to == nil or l > to) then to = l end
  end
  local span = (from and to) and (to - from) or 0
  io.write(string.format("pool: ok %d bad %d spent %s in %.3f s\n", total_ok, total_bad,
    any_spent and "yes" or "no", span))
end
