-- Sticky wrk clients for any tether (or other cookie-sticky) deployment.
--
-- The pods must answer with the pod's name in a header (x-pod) and echo the request's
-- X-Wrk-Slot header, so responses can be matched to sessions across connections.
--
-- Each wrk thread keeps SESSIONS sessions (default 1; env WRK_SESSIONS) and cycles its
-- requests through them. A session sends no cookie until a response sets one, then
-- keeps sending that cookie. Every response's pod (header x-pod by default; env
-- WRK_POD_HEADER) is compared with the pod that session saw first: at the end the
-- script reports the share of responses that came from the pinned pod.
--
--   WRK_SESSIONS=10000 wrk -t2 -c64 -d30s -s benches/load/sticky.lua http://tether:8080/
--   WRK_COOKIE=tether  (the cookie name, default tether)
--   WRK_CLIENT_COOKIES=1  the client invents each session's cookie value itself (for
--                         proxies that hash a cookie instead of setting one, e.g. nginx)
--   WRK_BODY_BYTES=1024   every request is a POST with a body of that many bytes
--                         (Content-Length framed), as form posts and JSON APIs send

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  sessions_per_thread = tonumber(os.getenv("WRK_SESSIONS") or "1")
  cookie_name = os.getenv("WRK_COOKIE") or "tether"
  pod_header = string.lower(os.getenv("WRK_POD_HEADER") or "x-pod")
  cookies, pinned, pending = {}, {}, {}
  if os.getenv("WRK_CLIENT_COOKIES") == "1" then
    local id = tostring(math.random(1, 1000000000))
    for i = 1, sessions_per_thread do cookies[i] = id .. "-" .. i end
  end
  next_slot, sticky, total, unpinned = 0, 0, 0, 0
  local body_bytes = tonumber(os.getenv("WRK_BODY_BYTES") or "0")
  if body_bytes > 0 then
    method, body = "POST", string.rep("x", body_bytes)
  end
end

function request()
  next_slot = (next_slot % sessions_per_thread) + 1
  table.insert(pending, next_slot)
  local headers = { ["X-Wrk-Slot"] = tostring(next_slot) }
  local c = cookies[next_slot]
  if c then
    headers["Cookie"] = cookie_name .. "=" .. c
  end
  return wrk.format(method, nil, headers, body)
end

function response(status, headers, body)
  -- Responses from several connections interleave: the pods echo X-Wrk-Slot back
  -- (the benchmark upstream does; so should yours), else request order is assumed.
  local slot = table.remove(pending, 1) or 1
  local pod, set
  for k, v in pairs(headers) do
    local lk = string.lower(k)
    if lk == "x-wrk-slot" then slot = tonumber(v) or slot end
    if lk == pod_header then pod = v end
    if lk == "set-cookie" then
      local value = string.match(v, "^" .. cookie_name .. "=([^;]*)")
      if value then set = value end
    end
  end
  if set and not cookies[slot] then cookies[slot] = set end
  total = total + 1
  if pod and cookies[slot] then
    if not pinned[slot] then
      pinned[slot] = pod
    elseif pinned[slot] == pod then
      sticky = sticky + 1
    else
      unpinned = unpinned + 1
    end
  end
end

function done(summary, latency, requests)
  local s, u = 0, 0
  for _, t in ipairs(threads) do
    s = s + (t:get("sticky") or 0)
    u = u + (t:get("unpinned") or 0)
  end
  local checked = s + u
  if checked > 0 then
    io.write(string.format("sticky: %.2f%% of %d checked responses came from the pinned pod\n", 100 * s / checked, checked))
  else
    io.write("sticky: no response carried a pinned session\n")
  end
end
