-- wrk script for hack/bench/search.sh: GET /api/product with the query string QUERY_KIND names, rotating
-- over words of the seed vocabulary (see search-seed.lua):
--   search: q=<word> or q=<word> <word prefix>, a price range on every third request;
--   name:   name=<an exact name that exists> (the original's filter: a full read in FerretDB);
local kind = os.getenv("QUERY_KIND") or "search"
local words = {"phone", "lamp", "wireless", "steel", "garden", "camera", "kit", "pro", "blue", "travel",
  "desk", "solar", "yoga", "audio", "kettle", "bundle"}
local names = {}
for name in (os.getenv("QUERY_NAMES") or "x"):gmatch("[^,]+") do names[#names + 1] = name end
local n = 0
request = function()
  n = n + 1
  local path
  if kind == "name" then
    path = "/api/product?name=" .. names[(n % #names) + 1]:gsub(" ", "%%20")
  else
    local w = words[(n % #words) + 1]
    if n % 2 == 0 then w = w .. "%20" .. string.sub(words[((n * 7) % #words) + 1], 1, 3) end
    path = "/api/product?q=" .. w
    if n % 3 == 0 then path = path .. "&minPrice=100&maxPrice=250" end
  end
  return wrk.format("GET", path)
end
