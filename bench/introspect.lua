-- wrk script: token introspection (RFC 7662) by a resource server that
-- authenticates with HTTP Basic; the token is a live user access token.
-- ACCESS_TOKEN and BASIC_AUTH come from the environment (bench/run).
-- BASIC_AUTH is base64("CLIENT_ID:CLIENT_SECRET"), computed by bench/run.
wrk.method = "POST"
wrk.body = "token=" .. os.getenv("ACCESS_TOKEN")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. os.getenv("BASIC_AUTH")

function response(status, headers, body)
  if status ~= 200 or not body:find('"active":true', 1, true) then
    io.stderr:write("unexpected answer " .. status .. ": " .. body .. "\n")
  end
end
