-- Argo CD health check for teamaccess.dev/TeamAccess.
--
-- Argo CD runs this with the live object in the global `obj` and shows the
-- `hs` it returns. The operator writes kstatus conditions (src/access/status.rs):
-- Ready is always present; Reconciling and Stalled only when True.
-- A TeamAccess never waits on something that happens later by itself: named
-- namespaces that do not exist yet (AppliedWithPending) and grants outside
-- their validity window are Ready, so they read as Healthy here.
--
-- Argo CD's interpreter is Lua 5.1 (gopher-lua): keep to that dialect.
-- argocd-cm-patch.yaml holds an exact copy of this file; a test compares them.

local hs = {}

local function field(t, key)
  if type(t) ~= "table" then
    return nil
  end
  return t[key]
end

local function condition(status, wanted)
  local conditions = field(status, "conditions")
  if type(conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(conditions) do
    if field(c, "type") == wanted then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return field(c, "status") == "True"
end

local function nonempty(s)
  return type(s) == "string" and s ~= ""
end

-- "Reason: message", or whichever of the two is there
local function describe(c, fallback)
  local reason, message = field(c, "reason"), field(c, "message")
  if nonempty(reason) and nonempty(message) then
    return reason .. ": " .. message
  elseif nonempty(message) then
    return message
  elseif nonempty(reason) then
    return reason
  end
  return fallback
end

local metadata = field(obj, "metadata")
local spec = field(obj, "spec")
local status = field(obj, "status")
local generation = tonumber(field(metadata, "generation"))
local observed = tonumber(field(status, "observedGeneration"))

-- a status about an older spec says nothing about this one
if type(status) ~= "table" or observed == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator: no status yet"
  return hs
end
if generation ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator: status describes generation "
    .. tostring(observed) .. " of " .. tostring(generation)
  return hs
end

local ready = condition(status, "Ready")
local stalled = condition(status, "Stalled")
local reconciling = condition(status, "Reconciling")

if field(spec, "suspend") == true then
  hs.status = "Suspended"
  if field(ready, "reason") == "Suspended" and nonempty(field(ready, "message")) then
    hs.message = ready.message
  elseif ready ~= nil and not is_true(ready) then
    hs.message = "suspended (spec.suspend is true); " .. describe(ready, "not ready")
  else
    hs.message = "suspended (spec.suspend is true)"
  end
  return hs
end

if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = describe(stalled, "stalled: a person must act")
  return hs
end

if is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = describe(reconciling, "reconciling")
  return hs
end

if is_true(ready) then
  hs.status = "Healthy"
  local message = field(ready, "message")
  if nonempty(message) then
    hs.message = message
  else
    hs.message = describe(ready, "ready")
  end
  return hs
end

if field(ready, "status") == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready, "not ready")
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "waiting for the Ready condition")
return hs
