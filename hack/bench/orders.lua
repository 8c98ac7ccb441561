-- wrk script for hack/bench/orders.sh: POST /api/order with the original's body, rotating over
-- the seeded SKUs so concurrent orders hit different inventory rows (and some the same). With
-- BENCH_TOKEN set (the gateway runs), every request carries it as a bearer token.
local skus = tonumber(os.getenv("BENCH_SKUS") or "20")
local token = os.getenv("BENCH_TOKEN")
local headers = {["Content-Type"] = "application/json"}
if token and token ~= "" then headers["Authorization"] = "Bearer " .. token end
local n = 0
request = function()
  n = n + 1
  local sku = "bench-sku-" .. (n % skus)
  local body = '{"orderLineItemsDtoList":[{"skuCode":"' .. sku .. '","price":"19.99","quantity":1}]}'
  return wrk.format("POST", "/api/order", headers, body)
end
