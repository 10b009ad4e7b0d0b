-- wrk script: bearer-token resource requests (GET /api/v1/me), the path every
-- resource call takes: one digest, one indexed lookup, one user read.
wrk.headers["Authorization"] = "Bearer " .. os.getenv("ACCESS_TOKEN")

function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("unexpected status " .. status .. "\n")
  end
end
