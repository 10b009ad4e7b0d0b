-- wrk script for bench/compare: mints single-use values before a load, by
-- sending the same request over and over and keeping one value from each
-- answer. bench/compare stops wrk (SIGINT) once it has enough. Environment:
--   MINT_METHOD   GET or POST
--   MINT_BODY     the form body of a POST (optional)
--   MINT_COOKIE   a Cookie header (a signed-in session; optional)
--   BASIC_AUTH    base64("CLIENT_ID:CLIENT_SECRET") (optional)
--   MINT_FROM     "code" (the code in the Location header of a redirect)
--   MINT_OUT      each thread appends its values to MINT_OUT.<thread number>
local created = 0
function setup(thread)
  thread:set("id", created)
  created = created + 1
end

local out
local from = os.getenv("MINT_FROM")
local bad = 0

function init(args)
  out = assert(io.open(os.getenv("MINT_OUT") .. "." .. id, "a"))
  out:setvbuf("line")
  wrk.method = os.getenv("MINT_METHOD") or "GET"
  local body = os.getenv("MINT_BODY")
  if body and body ~= "" then
    wrk.body = body
    wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  end
  local cookie = os.getenv("MINT_COOKIE")
  if cookie and cookie ~= "" then wrk.headers["Cookie"] = cookie end
  local auth = os.getenv("BASIC_AUTH")
  if auth and auth ~= "" then wrk.headers["Authorization"] = "Basic " .. auth end
end

function response(status, headers, body)
  local value
  if from == "code" then
    local location = headers["Location"] or headers["location"] or ""
    value = location:match("[?&]code=([^&]+)")
  end
  if value then
    out:write(value, "\n")
  else
    bad = bad + 1
    if bad <= 3 then io.stderr:write("no value in answer " .. status .. ": " .. body:sub(1, 200) .. "\n") end
  end
end
