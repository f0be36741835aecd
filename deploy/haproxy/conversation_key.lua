-- conversation_key.lua - the key that keeps one conversation on one replica
-- (deploy/haproxy/haproxy.cfg hashes it onto the replicas).
--
-- A chat request carries the whole conversation: turn 2 repeats turn 1's
-- messages and adds to them. So the first user message (its text and its
-- images, as the client wrote them) is the same on every turn, and differs
-- between conversations: hashing it sends every turn to the replica that
-- holds the conversation's KV prefix and image features. A system prompt
-- shared by every conversation is skipped; a key the client gives wins:
--
--   1. the top-level "prompt_cache_key" (OpenAI's field for this), then
--      "user" (one end user's conversations stay together), when they come
--      before "messages" (after it they are not read: a later turn, longer,
--      may be cut short before them, and its key must not change);
--   2. else the first element of "messages" whose "role" is "user" (OpenAI
--      chat and Ollama /api/chat alike), as raw JSON text: all of it when it
--      ends within the body's first KEY_LIMIT bytes, else its part before
--      that offset (an image is a data: URL or a link inside it, and tens of
--      KiB of either tell conversations apart; two that share them land
--      together, which costs nothing but balance). A fixed offset, so that
--      every turn, however long, gives the same key.
--
-- (The X-Conversation-Id header, checked first, is read by haproxy.cfg.)
-- No key (no body, no messages: /v1/completions, GET routes) → "" (a nil
-- would be a sample too), and the request goes to the least busy replica.
--
-- Only what HAProxy has buffered is read (option http-buffer-request, up to
-- tune.bufsize, which must hold KEY_LIMIT bytes of body besides the headers).
-- A body cut short is read as far as it goes; nothing here fails a request.
--
-- A plain Lua 5.3 module too: without HAProxy's `core`, it returns
-- {key = function(body)} for tests.

local KEY_LIMIT = 49152

local function skip_ws(s, i)
    return string.find(s, "[^ \t\r\n]", i)
end

-- s[i] is '"': the index after the closing quote, or nil if cut short.
local function skip_string(s, i)
    local j = i + 1
    while true do
        local k = string.find(s, '["\\]', j)
        if not k then return nil end
        if string.byte(s, k) == 92 then j = k + 2 else return k + 1 end
    end
end

-- The index after the value starting at s[i], or nil if cut short.
local function skip_value(s, i)
    local c = string.byte(s, i)
    if c == 34 then return skip_string(s, i) end
    if c == 123 or c == 91 then -- { or [
        local depth, j = 0, i
        while true do
            local k = string.find(s, '[%[%]{}"]', j)
            if not k then return nil end
            local ch = string.byte(s, k)
            if ch == 34 then
                j = skip_string(s, k)
                if not j then return nil end
            else
                depth = depth + ((ch == 123 or ch == 91) and 1 or -1)
                j = k + 1
                if depth == 0 then return j end
            end
        end
    end
    local k = string.find(s, "[,}%] \t\r\n]", i) -- a number, true, false or null
    return k
end

-- Iterates the members of the object at s[i] ('{'): key (raw, unquoted),
-- value start, value end (exclusive). Stops at the end or where cut short.
local function members(s, i)
    local j = i + 1
    return function()
        if not j then return nil end
        j = skip_ws(s, j)
        if not j then return nil end
        local c = string.byte(s, j)
        if c == 44 then j = skip_ws(s, j + 1) end -- ,
        if not j or string.byte(s, j) ~= 34 then return nil end
        local ke = skip_string(s, j)
        if not ke then return nil end
        local key = string.sub(s, j + 1, ke - 2)
        local colon = skip_ws(s, ke)
        if not colon or string.byte(s, colon) ~= 58 then return nil end
        local vs = skip_ws(s, colon + 1)
        if not vs then return nil end
        local ve = skip_value(s, vs)
        j = ve
        return key, vs, ve
    end
end

-- A string value's raw contents (escapes kept), or nil if not a string.
local function string_value(s, vs, ve)
    if not ve or string.byte(s, vs) ~= 34 then return nil end
    return string.sub(s, vs + 1, ve - 2)
end

-- The first user message of the array at s[i], as raw text (to KEY_LIMIT at most).
local function first_user_message(s, i)
    local j = i + 1
    while true do
        j = skip_ws(s, j)
        if not j then return nil end
        local c = string.byte(s, j)
        if c == 44 then j = skip_ws(s, j + 1) end
        if not j or string.byte(s, j) ~= 123 then return nil end -- ] or not an object
        local role = nil
        for key, vs, ve in members(s, j) do
            if key == "role" then role = string_value(s, vs, ve) end
            if not ve then break end
        end
        local e = skip_value(s, j)
        -- A role unknown because the message is cut short: take it (what
        -- precedes the first user message is small, what is cut is large).
        if role == "user" or (role == nil and not e) then
            local last = KEY_LIMIT
            if e and e - 1 < last then last = e - 1 end
            return string.sub(s, j, last)
        end
        if not e then return nil end
        j = e
    end
end

local function key(body)
    if type(body) ~= "string" then return nil end
    local i = skip_ws(body, 1)
    if not i or string.byte(body, i) ~= 123 then return nil end
    local cache_key, user, messages
    for k, vs, ve in members(body, i) do
        if k == "prompt_cache_key" then
            cache_key = string_value(body, vs, ve)
        elseif k == "user" then
            user = string_value(body, vs, ve)
        elseif k == "messages" then
            if string.byte(body, vs) == 91 then messages = first_user_message(body, vs) end
            break -- what follows may be cut short on a later turn: not read
        end
        if not ve then break end
    end
    if cache_key and #cache_key > 0 then return "k:" .. cache_key end
    if user and #user > 0 then return "u:" .. user end
    if messages then return "m:" .. messages end
    return nil
end

if core then
    -- lua.conversation_key: the key of the request's buffered body, or none.
    core.register_fetches("conversation_key", function(txn)
        local body = txn.sf:req_body()
        if not body or #body == 0 then return "" end
        return key(body) or ""
    end)
end

return {key = key}
