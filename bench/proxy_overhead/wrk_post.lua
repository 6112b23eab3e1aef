-- wrk script: POST a short chat completion, then print the summary as one JSON line.
-- STREAM=1 in the environment asks for an SSE stream instead of one JSON body.
local stream = os.getenv("STREAM") == "1"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"smol","messages":[{"role":"user","content":"Say hi."}],'
  .. '"max_tokens":8' .. (stream and ',"stream":true' or '') .. '}'

-- wrk's own text report rounds latencies to 2 significant digits and changes units;
-- a done() hook gives exact microseconds in a form run.py can parse without guessing.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
