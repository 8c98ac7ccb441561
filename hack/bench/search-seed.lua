-- wrk script for hack/bench/search.sh: creates exactly SEED_PRODUCTS products through POST /api/product
-- (SEED_THREADS threads, each its share), from a fixed vocabulary so searches have realistic hit counts,
-- then each thread stops itself (the script tops up what wrk did not send: the request() call wrk makes to verify the script, and POSTs lost to timeouts). Names are 2-3 words, descriptions 8; SKUs are unique per thread.
local vocab = {}
for w in ([[red blue green black white silver golden wooden steel cotton leather glass ceramic plastic
  wireless smart portable compact classic modern vintage premium organic bamboo carbon waterproof
  phone case charger cable speaker headphones earbuds watch lamp chair desk table sofa mug bottle
  backpack wallet jacket shirt shoes boots hat scarf gloves blanket pillow towel knife pan pot kettle
  camera lens tripod drone keyboard mouse monitor laptop tablet router printer notebook pen pencil
  garden hose shovel tent lantern bicycle helmet ball racket skates yoga mat dumbbell rope puzzle
  kit set pack pro mini max ultra lite plus edition series collection bundle travel kitchen office
  outdoor home kids sport studio gaming audio power solar electric manual digital analog]]):gmatch("%a+") do
  vocab[#vocab + 1] = w
end
local threads = tonumber(os.getenv("SEED_THREADS") or "2")
local total = tonumber(os.getenv("SEED_PRODUCTS") or "100000")
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
function init(args)
  quota = math.floor(total / threads)
  if tid == threads then quota = total - quota * (threads - 1) end
  sent, done, extra, seed = 0, 0, 0, tid * 7919
end
local function pick()
  seed = (seed * 1103515245 + 12345) % 2147483648
  return vocab[(seed % #vocab) + 1]
end
request = function()
  if sent >= quota then
    -- Every connection is past its last POST (wrk keeps one request in flight per connection), so
    -- after a few of these every POST has been answered or lost; the script tops up the lost ones.
    extra = extra + 1
    return wrk.format("GET", "/health/live")
  end
  sent = sent + 1
  local words = {}
  for i = 1, 8 do words[i] = pick() end
  local name = pick() .. " " .. pick()
  if sent % 3 == 0 then name = name .. " " .. pick() end
  seed = (seed * 1103515245 + 12345) % 2147483648
  local price = string.format("%d.%02d", seed % 500, seed % 100)
  local body = string.format('{"name":"%s","description":"%s","price":"%s","skuCode":"seed-%d-%d"}',
    name, table.concat(words, " "), price, tid, sent)
  return wrk.format("POST", "/api/product", {["Content-Type"] = "application/json"}, body)
end
response = function(status, headers, body)
  if status == 201 then done = done + 1 end
  if done >= quota or extra > 100 then wrk.thread:stop() end
end
