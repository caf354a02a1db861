"""Where everything lives in Redis, and the Lua scripts that change it atomically.

Every key carries a Redis Cluster hash tag (the part in braces), chosen so that each
operation touches one slot: an upload's record; an owner's indexes and events; a
group's record and members; an object key's index entry::

    <p>:{<uploadId>}:upload               string   the upload record (JSON), EX ttl
    <p>:expiry                            zset     uploadId -> expires_at
    <p>:{k:<bucket>/<key>}:upload         string   uploadId of that object key, EX ttl
    <p>:{o:<owner>}:uploads               zset     the owner's uploads (all of them)
    <p>:{o:<owner>}:uploads:s:<status>    zset     ... with that status
    <p>:{o:<owner>}:uploads:k:<kind>      zset     ... of that kind
    <p>:{o:<owner>}:uploads:g:<groupId>   zset     ... in that group
    <p>:{o:<owner>}:uploads:p:<profile>   zset     ... under that profile
    <p>:{o:<owner>}:groups                zset     the owner's groups
    <p>:{o:<owner>}:groups:s:<status>     zset     ... with that status
    <p>:{o:<owner>}:events                stream   the owner's events, MAXLEN ~ retention
    <p>:{w:<token>}:wake                  stream   wakes one process's event reader, MAXLEN 1
    <p>:{g:<groupId>}:group               string   the group record (JSON), EX ttl
    <p>:{g:<groupId>}:members             zset     uploadId -> join position

The owner index sets all score 0 and hold members ``"<created_at>:<id>"``
(:func:`~flask_obitox.state.cursor.index_member`), read newest first with
``ZREVRANGEBYLEX``. Text inside a hash tag has ``%``, ``{`` and ``}`` (and ``/`` in a
bucket) percent-encoded, so no owner, group id or object key can end its tag early or
make two keys collide.
"""

from __future__ import annotations

from .capabilities import OPEN_GROUP_STATUSES

_ESCAPES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D"})
_BUCKET_ESCAPES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D", "/": "%2F"})


def _tag(text: str) -> str:
    # translate() with a table of strings costs some 50 instructions a character: most
    # names have nothing to escape.
    if "%" in text or "{" in text or "}" in text:
        return text.translate(_ESCAPES)
    return text


def _bucket_tag(bucket: str) -> str:
    return bucket.translate(_BUCKET_ESCAPES) if "/" in bucket else _tag(bucket)


class RedisLayout:
    """The key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.expiry = f"{prefix}:expiry"
        self._upload_head = f"{prefix}:{{"

    def upload(self, upload_id: str) -> str:
        return f"{self._upload_head}{upload_id}}}:upload"

    def object_key(self, bucket: str, key: str) -> str:
        return f"{self.prefix}:{{k:{_bucket_tag(bucket)}/{_tag(key)}}}:upload"

    def owner_uploads(self, owner: str, dimension: str = "", value: str = "") -> str:
        """The owner's index of uploads; with ``dimension`` (``s`` status, ``k`` kind,
        ``g`` group id, ``p`` profile), of those whose field is ``value``."""
        head = f"{self.prefix}:{{o:{_tag(owner)}}}:uploads"
        return f"{head}:{dimension}:{value}" if dimension else head

    def owner_groups(self, owner: str, status: str = "") -> str:
        head = f"{self.prefix}:{{o:{_tag(owner)}}}:groups"
        return f"{head}:s:{status}" if status else head

    def owner_events(self, owner: str) -> str:
        return f"{self.prefix}:{{o:{_tag(owner)}}}:events"

    def event_waker(self, token: str) -> str:
        return f"{self.prefix}:{{w:{token}}}:wake"

    def group(self, group_id: str) -> str:
        return f"{self.prefix}:{{g:{_tag(group_id)}}}:group"

    def group_members(self, group_id: str) -> str:
        return f"{self.prefix}:{{g:{_tag(group_id)}}}:members"


#: Set KEYS[1] from ARGV[1] to ARGV[2], keeping its TTL (or, given ARGV[3], lowering it
#: to at most ARGV[3] milliseconds: a settled upload); 1 when it holds ARGV[2] after.
#: A retry of a compare-and-set whose reply was lost finds its own write (ARGV[2], made
#: unique per caller by the record's ``revision``) and answers 1 again: the caller that
#: won still knows it won, and no other caller can.
CAS_SCRIPT = """
local stored = redis.call('GET', KEYS[1])
if stored == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
    if ARGV[3] then
        local ttl = redis.call('PTTL', KEYS[1])
        if ttl < 0 or ttl > tonumber(ARGV[3]) then
            redis.call('PEXPIRE', KEYS[1], ARGV[3])
        end
    end
    return 1
end
if stored == ARGV[2] then
    return 1
end
return 0
"""

#: A byte-count report (``ByteReports.report_bytes``) in one step: the record of KEYS[1]
#: if owner ARGV[1]'s, ``uploading``, server-laid-out, not expired at ARGV[3] (the time
#: as the record's JSON writes it) and at least ARGV[2] bytes long; then ``{1, new}``
#: with ARGV[2] bytes, ``updated_at`` ARGV[3] and revision ARGV[4] written (TTL kept),
#: or ``{0, stored}`` when the count is not higher. Anything else answers nil (the
#: caller's checked path decides). Fields are read with cjson; the record is rewritten
#: as text, not re-encoded (cjson keeps 14 digits of a float and would round the
#: timestamps): ``updated_at`` is the first `,"updated_at":` (every field before it is a
#: string, a number or the status, and no `,"` can occur inside a JSON string), and the
#: tail from the last `,"revision":` holds only the revision, the byte count and the
#: part reports (the server's own part numbers and statuses), in that order, as
#: ``UploadRecord.to_json`` writes them.
BYTES_SCRIPT = """
local stored = redis.call('GET', KEYS[1])
if not stored then
    return false
end
local ok, record = pcall(cjson.decode, stored)
if not ok or type(record) ~= 'table' then
    return false
end
local done, size, ends = record['uploaded_bytes'], record['size'], record['expires_at']
if record['owner'] ~= ARGV[1] or record['status'] ~= 'uploading'
    or record['size_deferred'] ~= false or record['part_size'] == 0
    or type(done) ~= 'number' or type(size) ~= 'number' or type(ends) ~= 'number' then
    return false
end
local reported = tonumber(ARGV[2])
if tonumber(ARGV[3]) > ends or reported > size then
    return false
end
if reported <= done then
    return {0, stored}
end
local at = string.find(stored, ',"updated_at":', 1, true)
local tail, from = nil, 1
while true do
    local found = string.find(stored, ',"revision":', from, true)
    if not found then
        break
    end
    tail, from = found, found + 1
end
if not at or not tail or tail < at then
    return false
end
local at_end = string.find(stored, ',', at + 14, true)
local bytes_at = string.find(stored, ',"uploaded_bytes":', tail, true)
local reports_at = string.find(stored, ',"part_reports":', tail, true)
if not at_end or at_end > tail or not bytes_at or not reports_at or reports_at < bytes_at then
    return false
end
local new = string.sub(stored, 1, at + 13) .. ARGV[3] .. string.sub(stored, at_end, tail - 1)
    .. ',"revision":"' .. ARGV[4] .. '","uploaded_bytes":' .. ARGV[2]
    .. string.sub(stored, reports_at)
redis.call('SET', KEYS[1], new, 'KEEPTTL')
return {1, new}
"""

#: Lua adding to index sets: ``KEYS[first]`` to ``KEYS[last]``, each key's member count
#: then its members (score 0) from ``ARGV[at]`` on; each set pruned below ``cutoff``
#: first and given ``ttl`` after. Shared by :data:`INDEX_SCRIPT` and :data:`WRITE_SCRIPT`.
_ADD_TO_INDEXES = """
for k = first, last do
    local key, count = KEYS[k], tonumber(ARGV[at])
    redis.call('ZREMRANGEBYLEX', key, '-', cutoff)
    for from = at + 1, at + count, 1000 do
        local args = {}
        for i = from, math.min(from + 999, at + count) do
            args[#args + 1] = 0
            args[#args + 1] = ARGV[i]
        end
        redis.call('ZADD', key, unpack(args))
    end
    redis.call('EXPIRE', key, ttl)
    at = at + count + 1
end
"""

#: Add to an owner's index sets KEYS (one slot: the owner's) in one step: ARGV[1] their
#: TTL, ARGV[2] the prune bound (``"(<time>"``: an entry created before it leads to a
#: record that is gone), then per key its member count and its members (score 0). Each
#: set is pruned, added to and given the TTL, as three commands each would: one reply
#: instead of three per set (a single upload writes three sets, nine replies).
INDEX_SCRIPT = (
    "local ttl, cutoff, at, first, last = ARGV[1], ARGV[2], 3, 1, #KEYS"
    + _ADD_TO_INDEXES
    + "return #KEYS"
)

#: A standalone server's whole write of new records in one step (no slots to respect),
#: answering how many of its events were refused:
#:
#: - ``SET`` each of the first ARGV[2] keys to its value (ARGV[3] on) with ``EX`` ARGV[1];
#: - the expiry set (the next key): pruned below its bound, then its entries added
#:   (their count, then score/id pairs);
#: - the index sets (the next ARGV-given number of keys), all pruned below one bound, as
#:   :data:`INDEX_SCRIPT` adds them;
#: - the events: the streams are the remaining keys, after the streams' ``MAXLEN ~`` and
#:   TTL each stream's count then its bodies, each appended as its own entry. Only when
#:   the first record did not exist before: a retry of a write whose reply was lost finds
#:   its records and appends nothing twice. A refused append loses its event, not the
#:   write (the records stand, as the ``EventFanIn`` contract says).
#:
#: One reply where a single upload's write and event took five commands (a cluster,
#: whose keys lie in many slots, still sends them per slot, its appends on their own).
WRITE_SCRIPT = (
    """
local ttl, n = ARGV[1], tonumber(ARGV[2])
local fresh = redis.call('EXISTS', KEYS[1]) == 0
for i = 1, n do
    redis.call('SET', KEYS[i], ARGV[2 + i], 'EX', ttl)
end
local expiry, at = KEYS[n + 1], n + 3
redis.call('ZREMRANGEBYSCORE', expiry, '-inf', ARGV[at])
local count = tonumber(ARGV[at + 1])
for from = at + 2, at + 1 + count, 1000 do
    redis.call('ZADD', expiry, unpack(ARGV, from, math.min(from + 999, at + 1 + count)))
end
at = at + 2 + count
local cutoff, first, last = ARGV[at], n + 2, n + 1 + tonumber(ARGV[at + 1])
at = at + 2
"""
    + _ADD_TO_INDEXES
    + """
local refused = 0
if fresh then
    local maxlen, events_ttl = ARGV[at], ARGV[at + 1]
    at = at + 2
    for k = last + 1, #KEYS do
        local stream, count = KEYS[k], tonumber(ARGV[at])
        for i = at + 1, at + count do
            local added = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'e', ARGV[i])
            if type(added) == 'table' and added.err then
                refused = refused + 1
            end
        end
        redis.pcall('EXPIRE', stream, events_ttl)
        at = at + count + 1
    end
end
return refused
"""
)

#: Move member ARGV[1] in an owner's index: out of KEYS[2 .. ARGV[2]+1], into the rest.
#: KEYS[1] is the owner's index of everything: a member it does not hold (an upload
#: written before indexes existed) joins nothing, and a joined set lives at least as
#: long as it, so that no set outlives its entries' records for long nor dies before.
MOVE_SCRIPT = """
local leave = tonumber(ARGV[2])
for i = 2, leave + 1 do
    redis.call('ZREM', KEYS[i], ARGV[1])
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 or not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
    return 0
end
for i = leave + 2, #KEYS do
    redis.call('ZADD', KEYS[i], 0, ARGV[1])
    if redis.call('PTTL', KEYS[i]) < ttl then
        redis.call('PEXPIRE', KEYS[i], ttl)
    end
end
return 1
"""

_OPEN = " or ".join(f"group.status == '{status}'" for status in sorted(OPEN_GROUP_STATUSES))

#: Add ARGV (upload ids) to group KEYS[1]'s members KEYS[2], in order, unless the group
#: is gone (-1) or closed (-2); returns the member count. Members already there keep
#: their position, so a retried call adds nothing twice.
JOIN_SCRIPT = f"""
local raw = redis.call('GET', KEYS[1])
if not raw then
    return -1
end
local group = cjson.decode(raw)
if group.sealed or not ({_OPEN}) then
    return -2
end
local n = redis.call('ZCARD', KEYS[2])
for i = 1, #ARGV do
    if redis.call('ZADD', KEYS[2], 'NX', n + 1, ARGV[i]) == 1 then
        n = n + 1
    end
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
    redis.call('PEXPIRE', KEYS[2], ttl)
end
return n
"""
JOIN_GONE = -1
JOIN_CLOSED = -2

#: Delete KEYS[1] only if it holds ARGV[1] (an object key's entry, if still this upload's).
DELETE_IF_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
