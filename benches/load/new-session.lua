-- Every request is a new session: no cookie is ever sent.
--   wrk -t2 -c64 -d30s -s benches/load/new-session.lua http://tether:8080/
function request()
  return wrk.format(nil, nil, {})
end
